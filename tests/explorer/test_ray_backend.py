"""The Ray Tune backend against the Optuna backend: same greedy path and trials, failures retried
then recorded, resume after a killed driver, one history across backends (local Ray, 2 CPUs)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import explorer.backends.ray_tune  # noqa: F401  (registers the "ray" executor)
from conftest_ray import ray_cluster  # noqa: F401  (the shared Ray session)
from explorer.controller import run_study
from explorer.report.leaderboard import status_json
from explorer.tracking.tracker import MlflowTracker, default_artifact_root, default_tracking_uri
from explorer.study.storage import default_storage_url, open_study
from explorer.study.load import parse_study
from test_ray_support import FlakyRunner, SpanRunner, max_overlap
from test_study_fixtures import HOLD_MARK, PAPER_AVG, PAPER_PATH, paper_runner, study_data

GREEDY = {"type": "greedy", "base": ["A", "B"]}


def _spec(tmp: Path, name: str = "greedy", strategy=None, **extra):
    return parse_study(study_data(name, strategy or GREEDY, **extra), f"{name}.yaml", tmp)


@pytest.mark.slow
def test_greedy_on_ray_two_at_once_matches_optuna(tmp_path, ray_cluster):
    res = {"max_concurrent_trials": 2, "cpus_per_worker": 1}
    spec = _spec(tmp_path / "local", resources=res)
    ref = run_study(spec, default_storage_url(tmp_path / "local"), tmp_path / "local", runner=paper_runner)
    spec = _spec(tmp_path / "ray", resources=res)
    out = run_study(spec, default_storage_url(tmp_path / "ray"), tmp_path / "ray", runner=SpanRunner(),
                    backend="ray")
    assert out.finished and ref.finished
    assert out.greedy_path == ref.greedy_path == PAPER_PATH
    assert out.best_experts == "A+B+F+E+C" and out.best_value == pytest.approx(666.5)
    ray_trials = open_study(spec, default_storage_url(tmp_path / "ray")).get_trials()
    opt_trials = open_study(spec, default_storage_url(tmp_path / "local")).get_trials()
    assert len(ray_trials) == 11 and all(t.state == TrialState.COMPLETE for t in ray_trials)

    def by_set(ts):
        return {frozenset(t.user_attrs["experts"].split("+")): (t.value, t.params, t.user_attrs["round"]) for t in ts}

    assert by_set(ray_trials) == by_set(opt_trials)
    assert set(by_set(ray_trials)) == set(PAPER_AVG)
    # the trials really ran as Ray actors (not in this process), at most 2 and at times 2 at once
    spans = [json.loads(Path(t.user_attrs["trial_dir"], "span.json").read_text()) for t in ray_trials]
    assert all(pid != __import__("os").getpid() for _, _, pid in spans)
    assert max_overlap([(s, e) for s, e, _ in spans]) == 2
    # the round barrier holds under Tune: from round 2, a round starts after the previous one finished
    rounds: dict[int, list] = {}
    for t in ray_trials:
        rounds.setdefault(t.user_attrs["round"], []).append(t)
    for r in range(2, 5):
        assert min(t.datetime_start for t in rounds[r]) >= max(t.datetime_complete for t in rounds[r - 1])
    assert any((tmp_path / "ray" / "ray_results").iterdir())  # Tune's experiment state sits in the workdir


@pytest.mark.slow
def test_raising_trial_retried_then_fail_and_dead_worker_retried_by_ray(tmp_path, ray_cluster):
    spec = _spec(tmp_path, "flaky", retries=1, strategy={"type": "greedy", "base": ["A", "B"], "max_size": 3},
                 resources={"max_concurrent_trials": 2})
    runner = FlakyRunner(str(tmp_path / "marks"), raises=("A+B+D",), dies_once=("A+B+E",))
    out = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner, backend="ray")
    assert out.finished and out.greedy_path == ["A+B", "A+B+F"] and out.best_value == pytest.approx(665.3)
    trials = open_study(spec, default_storage_url(tmp_path)).get_trials()
    d = [t for t in trials if t.user_attrs["experts"] == "A+B+D"]
    # raised: recorded FAIL with the error, retried once by the controller, then kept FAIL
    assert [(t.state, t.user_attrs["attempt"]) for t in d] == [(TrialState.FAIL, 0), (TrialState.FAIL, 1)]
    assert all("ValueError: scripted failure for A+B+D" in t.user_attrs["error"] for t in d)
    assert out.n_failed == 2 and out.n_complete == 4
    # died: Ray's FailureConfig re-ran the same trial; the study saw one COMPLETE trial
    e = [t for t in trials if t.user_attrs["experts"] == "A+B+E"]
    assert (tmp_path / "marks" / "A+B+E.died").is_file()
    assert [(t.state, t.value) for t in e] == [(TrialState.COMPLETE, pytest.approx(660.1))]


def _wait_for(pred, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_driver_killed_mid_study_resumes_without_loss_or_duplicates(tmp_path, ray_cluster):
    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path[:0] = [{str(here.parents[1])!r}, {str(here)!r}]; "
            f"from test_ray_support import drive; drive({str(tmp_path)!r}, {ray_cluster!r}, 1.0, 2)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = default_storage_url(tmp_path)

    try:  # the first trial to start after 2 are done holds and says so
        _wait_for(lambda: (tmp_path / HOLD_MARK).exists(), 90, "2 trials done and one running")
    finally:
        proc.kill()
        proc.wait()
    before = optuna.load_study(study_name="killed", storage=url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in before) >= 2
    assert any(t.state == TrialState.RUNNING for t in before)
    done_before = {t.user_attrs["experts"]: t.value for t in before if t.state == TrialState.COMPLETE}
    spec = parse_study(study_data("killed", GREEDY, backend="ray", ray_address=ray_cluster,
                                  resources={"max_concurrent_trials": 2}), "killed.yaml", tmp_path)
    out = run_study(spec, url, tmp_path, runner=paper_runner, backend="ray")
    assert out.finished and out.greedy_path == PAPER_PATH
    trials = open_study(spec, url).get_trials()
    complete = [t.user_attrs["experts"] for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(complete) == sorted(set(complete)) and len(complete) == 11  # nothing duplicated or lost
    for t in trials:  # what finished before the kill is kept as it was
        if t.state == TrialState.COMPLETE and t.user_attrs["experts"] in done_before:
            assert t.value == done_before[t.user_attrs["experts"]]
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    assert others and all(t.state == TrialState.FAIL and "error" not in t.user_attrs for t in others)  # interrupted
    assert out.n_failed == 0


@pytest.mark.slow
def test_study_begun_on_optuna_finished_on_ray_is_one_history(tmp_path, ray_cluster):
    url = default_storage_url(tmp_path)
    tracker = lambda: MlflowTracker(default_tracking_uri(tmp_path), "mixed",  # noqa: E731
                                    artifact_root=default_artifact_root(tmp_path))
    first = run_study(_spec(tmp_path, "mixed", budget={"max_trials": 5}), url, tmp_path, runner=paper_runner,
                      tracker=tracker())
    assert not first.finished and first.n_complete == 5
    spec = _spec(tmp_path, "mixed", backend="ray")
    out = run_study(spec, url, tmp_path, runner=paper_runner, backend="ray", tracker=tracker())
    assert out.finished and out.greedy_path == PAPER_PATH and out.n_trials == 11
    trials = open_study(spec, url).get_trials()
    assert [t.number for t in trials] == list(range(11))
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["attempt"] == 0 for t in trials)
    assert {frozenset(t.user_attrs["experts"].split("+")): t.value for t in trials} == pytest.approx(PAPER_AVG)
    assert [len([t for t in trials if t.user_attrs["round"] == r]) for r in range(5)] == [1, 4, 3, 2, 1]
    # the status document is the same whichever backend ran a trial
    doc = status_json(optuna.load_study(study_name="mixed", storage=url))
    assert len(doc["trials"]) == 11 and len({frozenset(rec) for rec in doc["trials"]}) == 1
    # MLflow: one parent run, one child per trial, Optuna-run (0-4) and Ray-run (5-10) logged alike
    client = MlflowClient(default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("mixed")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent = doc["mlflow_parent_run_id"]
    children = {r.info.run_id: r for r in runs if r.info.run_id != parent}
    assert len(runs) == 12 and {t.user_attrs["mlflow_run_id"] for t in trials} == set(children)
    by_number = {int(r.data.tags["trial_number"]): r for r in children.values()}
    for n in range(11):
        r = by_number[n]
        assert r.data.tags["state"] == "COMPLETE" and r.info.status == "FINISHED"
        assert r.data.metrics[r.data.tags["objective_name"]] == pytest.approx(trials[n].value)
        assert {k for k in r.data.params if k.startswith("expert.")} == {
            k for k in by_number[0].data.params if k.startswith("expert.")}
        assert set(r.data.tags) == set(by_number[0].data.tags)
