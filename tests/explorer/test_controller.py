"""Controller behaviour with scripted runners: retries, failures, pruning, budget, tracker calls."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from explorer.controller import run_study, run_worker
from explorer.study.storage import StorageError, default_storage_url, open_study
from explorer.strategies.base import trial_params
from explorer.study.load import parse_study
from test_study_fixtures import PAPER_AVG, PAPER_PATH, SleepyRunner, paper_runner, study_data

GREEDY = {"type": "greedy", "base": ["A", "B"]}


def _spec(tmp_path, strategy=GREEDY, **extra):
    return parse_study(study_data("ctl", strategy, **extra), "ctl.yaml", tmp_path)


def _trials(spec, tmp_path):
    return open_study(spec, default_storage_url(tmp_path)).get_trials()


def test_failing_trial_is_retried_then_recorded_and_the_study_finishes(tmp_path):
    attempts: dict[str, int] = {}

    def runner(job):
        experts = job.user_attrs["experts"]
        attempts[experts] = attempts.get(experts, 0) + 1
        assert job.user_attrs["attempt"] == attempts[experts] - 1
        if experts == "A+B+D":
            raise RuntimeError("rank 1 killed by signal 9")
        if experts == "A+B+F" and attempts[experts] == 1:
            raise RuntimeError("transient NCCL timeout")
        return paper_runner(job)

    spec = _spec(tmp_path, retries=1)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    assert outcome.finished and outcome.greedy_path == PAPER_PATH
    trials = _trials(spec, tmp_path)
    d = [t for t in trials if t.user_attrs["experts"] == "A+B+D"]
    assert [t.state for t in d] == [TrialState.FAIL, TrialState.FAIL]  # first run + one retry
    assert all("rank 1 killed" in t.user_attrs["error"] and t.user_attrs["log"].endswith("logs") for t in d)
    f = [t for t in trials if t.user_attrs["experts"] == "A+B+F"]
    assert [t.state for t in f] == [TrialState.FAIL, TrialState.COMPLETE]
    assert f[1].params == f[0].params and f[1].user_attrs["attempt"] == 1
    assert outcome.n_failed == 3 and outcome.n_complete == 10
    round1 = {c["experts"]: c["states"] for c in outcome.path[1]["candidates"]}
    assert round1["A+B+D"] == ["failed"] and round1["A+B+F"] == ["complete"]


def test_result_without_objective_or_nan_is_a_failure(tmp_path):
    def runner(job):
        if job.user_attrs["experts"] == "A+B+C":
            return {"scores": {}}
        if job.user_attrs["experts"] == "A+B+D":
            return {"objective": float("nan")}
        return paper_runner(job)

    spec = _spec(tmp_path, strategy={**GREEDY, "max_size": 3})
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    errors = {t.user_attrs["experts"]: t.user_attrs.get("error") for t in _trials(spec, tmp_path)}
    assert "no numeric 'objective'" in errors["A+B+C"] and errors["A+B+D"] == "objective is NaN"
    assert outcome.best_experts == "A+B+F"


def test_pruner_stops_weak_candidates_and_greedy_skips_them(tmp_path):
    steps_run: dict[str, int] = {}

    def runner(job):  # streams four eval scores; the objective is the paper's Avg
        experts = job.user_attrs["experts"]
        for step in range(4):
            steps_run[experts] = step + 1
            if job.report(step * 10, PAPER_AVG[frozenset(experts.split("+"))]):
                raise optuna.TrialPruned()
        return paper_runner(job)

    spec = _spec(tmp_path, strategy={**GREEDY, "max_size": 3},
                 pruner={"type": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}})
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    by_set = {t.user_attrs["experts"]: t for t in _trials(spec, tmp_path)}
    assert by_set["A+B+D"].state == TrialState.PRUNED and steps_run["A+B+D"] == 1
    assert by_set["A+B+D"].intermediate_values == {0: pytest.approx(653.6)}
    assert by_set["A+B+F"].state == TrialState.COMPLETE and steps_run["A+B+F"] == 4
    assert outcome.n_pruned >= 1 and outcome.finished and outcome.best_experts == "A+B+F"
    states = {c["experts"]: c["states"] for c in outcome.path[1]["candidates"]}
    assert states["A+B+D"] == ["pruned"]


def test_tracker_and_progress_are_called(tmp_path):
    calls = []

    class Tracker:
        def on_study_start(self, study):
            calls.append(("study", study.study_name))

        def on_trial_start(self, study, number, trial_dir):
            calls.append(("start", number, trial_dir.name))

        def on_trial_end(self, study, frozen, trial_dir):
            calls.append(("end", frozen.number, frozen.state.name, trial_dir.exists()))

    progress = []
    spec = _spec(tmp_path, strategy={**GREEDY, "max_size": 3})
    run_study(spec, default_storage_url(tmp_path), tmp_path, tracker=Tracker(), runner=paper_runner,
              progress=progress.append)
    assert calls[0] == ("study", "ctl")
    starts = [c for c in calls if c[0] == "start"]
    assert [c[1] for c in starts] == list(range(5))
    assert starts[0][2] == "r0__A+B__s0" and len({c[2] for c in starts}) == 5  # a directory per planned trial
    assert sorted(c[1] for c in calls if c[0] == "end") == list(range(5))
    assert all(c[2] == "COMPLETE" and c[3] for c in calls if c[0] == "end")
    last = progress[-1]
    assert set(last) == {"round", "done", "running", "failed", "best_value", "best_experts", "elapsed_s", "eta_s", "tie"}
    assert (last["round"], last["done"], last["running"], last["best_experts"]) == (1, 5, 0, "A+B+F")


def test_budget_max_trials_stops_the_study(tmp_path):
    spec = _spec(tmp_path, budget={"max_trials": 3})
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=paper_runner)
    assert not outcome.finished and "max_trials=3" in outcome.stopped_reason
    assert len(_trials(spec, tmp_path)) == 3


def test_timeout_lets_running_trials_finish_then_stops(tmp_path):
    spec = _spec(tmp_path, budget={"timeout_s": 0.3})
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=SleepyRunner(0.5))
    trials = _trials(spec, tmp_path)
    assert not outcome.finished and outcome.stopped_reason.startswith("timeout")
    assert 1 <= len([t for t in trials if t.state == TrialState.COMPLETE]) < 11
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_a_worker_needs_an_existing_study(tmp_path):
    with pytest.raises(StorageError, match="no study named 'ctl' to join"):
        run_worker(_spec(tmp_path), default_storage_url(tmp_path), tmp_path, runner=paper_runner)


def test_two_controllers_on_one_sqlite_study_share_the_work(tmp_path):
    import threading
    from collections import Counter

    runs = []

    class Recording(SleepyRunner):
        def __call__(self, job):
            runs.append((threading.current_thread().name, job.user_attrs["key"]))
            return super().__call__(job)

    spec = _spec(tmp_path, resources={"max_concurrent_trials": 2})
    run_study(spec, default_storage_url(tmp_path), tmp_path, runner=Recording(0.0))  # creates; runs all
    runs.clear()
    # a generous grace period: on a loaded machine a late heartbeat would (correctly) re-run a trial
    spec2 = parse_study(study_data("ctl2", GREEDY, resources={"max_concurrent_trials": 2}, grace_period_s=30),
                        "ctl2.yaml", tmp_path)
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(
        run_study(spec2, default_storage_url(tmp_path), tmp_path, runner=Recording(0.15)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [o.greedy_path for o in outcomes] == [PAPER_PATH, PAPER_PATH]
    per_key = Counter(key for _, key in runs)
    assert len(per_key) == 11 and set(per_key.values()) == {1}
    trials = _trials(spec2, tmp_path)
    assert len(trials) == 11 and all(t.state == TrialState.COMPLETE for t in trials)


def test_interrupted_controller_marks_its_trials_and_a_rerun_completes_them(tmp_path):
    def interrupting(job):
        if job.user_attrs["experts"] == "A+B+E":
            raise KeyboardInterrupt  # Ctrl-C in the middle of round 1
        return paper_runner(job)

    spec = _spec(tmp_path)  # retries=0: an interruption is not a failure of the trial
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, default_storage_url(tmp_path), tmp_path, runner=interrupting)
    trials = _trials(spec, tmp_path)
    cut = [t for t in trials if t.state == TrialState.FAIL]
    assert cut and all(t.user_attrs.get("interrupted") and "error" not in t.user_attrs for t in cut)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=paper_runner)
    assert outcome.finished and outcome.greedy_path == PAPER_PATH and outcome.n_complete == 11


def test_an_attempt_killed_while_writing_its_params_is_rerun_with_all_of_them(tmp_path):
    # SIGKILL between two param writes leaves a FAIL attempt with only some fixed params; the
    # re-run must get the planned params, not that partial set (it would run another mixture)
    spec = _spec(tmp_path)
    study = open_study(spec, default_storage_url(tmp_path))
    key = "r0/A+B/s0"
    partial = optuna.trial.create_trial(
        state=TrialState.FAIL, params={"expert_A": True},
        distributions={"expert_A": optuna.distributions.CategoricalDistribution([False, True])},
        user_attrs={"key": key, "round": 0, "candidate": "base", "seed": 0, "experts": "A+B", "attempt": 0})
    study.add_trial(partial)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=paper_runner)
    assert outcome.finished and outcome.greedy_path == PAPER_PATH
    rerun = [t for t in _trials(spec, tmp_path) if t.user_attrs["key"] == key]
    assert [t.state for t in rerun] == [TrialState.FAIL, TrialState.COMPLETE]
    assert {k: v for k, v in trial_params(rerun[1]).items() if k.startswith("expert_")} == {
        f"expert_{x}": x in "AB" for x in "ABCDEF"}


@pytest.mark.parametrize("restarts,attempts", [(0, 2), (1, 1)])
def test_restarts_in_place_count_against_retries(tmp_path, restarts, attempts):
    # a Ray Train trial restarted in place before failing has spent those restarts of `retries`:
    # a deterministic failure (an OOM at this batch size) runs retries + 1 times in all, not more
    from explorer.backends.base import RunnerError
    runs = []

    def runner(job):
        if job.user_attrs["experts"] == "A+B+D":
            runs.append(job.number)
            raise RunnerError("TorchTrainer of trial failed: CUDA out of memory", restarts=restarts)
        return paper_runner(job)

    spec = _spec(tmp_path, retries=1)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    assert outcome.finished and outcome.greedy_path == PAPER_PATH
    d = [t for t in _trials(spec, tmp_path) if t.user_attrs["experts"] == "A+B+D"]
    assert len(runs) == len(d) == attempts and all(t.state == TrialState.FAIL for t in d)
    assert [t.user_attrs.get("restarts", 0) for t in d] == [restarts] * attempts


def test_a_claimed_trial_has_its_owner_before_it_turns_running(tmp_path):
    from explorer.controller import Controller
    from explorer.study.storage import OWNER_ATTR, owner_token

    spec = _spec(tmp_path)
    ctl = Controller(spec, default_storage_url(tmp_path), tmp_path, runner=paper_runner)
    ctl.study.enqueue_trial({}, user_attrs={"key": "k"})
    trial_id = ctl.storage.get_trial_id_from_study_id_trial_number(ctl.study_id, 0)
    seen = []
    set_state = ctl.storage.set_trial_state_values

    def spy(tid, state, values=None):
        # a controller killed right after this write must leave a trial its successor can tell is orphaned
        seen.append((state, ctl.storage.get_trial(tid).system_attrs.get(OWNER_ATTR)))
        return set_state(tid, state, values)

    ctl.storage.set_trial_state_values = spy
    assert ctl._claim(trial_id)
    assert seen == [(TrialState.RUNNING, owner_token())]
    # a second claim of the RUNNING trial fails and leaves its owner alone
    ctl.storage.set_trial_system_attr(trial_id, OWNER_ATTR, dict(owner_token(), pid=-1))
    assert not ctl._claim(trial_id)
    assert ctl.storage.get_trial(trial_id).system_attrs[OWNER_ATTR]["pid"] == -1


def test_preempted_attempts_spend_no_retry_and_continue_in_the_same_directory(tmp_path):
    from explorer.backends.base import TrialPreemptedError
    seen: dict[str, list] = {}

    def runner(job):
        experts = job.user_attrs["experts"]
        seen.setdefault(experts, []).append(job.trial_dir)
        if experts == "A+B+F" and len(seen[experts]) <= 7:  # a week of pre-emptions, retries=0
            raise TrialPreemptedError("pre-empted: checkpointed, to be continued")
        return paper_runner(job)

    spec = _spec(tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    assert outcome.finished and outcome.greedy_path == PAPER_PATH and outcome.n_failed == 0
    f = [t for t in _trials(spec, tmp_path) if t.user_attrs["experts"] == "A+B+F"]
    assert [t.state for t in f] == [TrialState.FAIL] * 7 + [TrialState.COMPLETE]
    assert all(t.user_attrs["preempted"] and "error" not in t.user_attrs for t in f[:7])
    assert len(set(seen["A+B+F"])) == 1  # every attempt got the planned trial's one directory


def test_a_cap_on_interruptions_is_a_study_setting_named_when_it_stops_a_trial(tmp_path):
    from explorer.backends.base import TrialPreemptedError
    from explorer.strategies.base import status_of

    def runner(job):
        if job.user_attrs["experts"] == "A+B+F":
            raise TrialPreemptedError("pre-empted")
        return paper_runner(job)

    spec = _spec(tmp_path, strategy={**GREEDY, "max_size": 3}, max_interruptions=2)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    assert outcome.finished and outcome.greedy_path == ["A+B", "A+B+C"]  # F (665.3) never ran
    f = [t for t in _trials(spec, tmp_path) if t.user_attrs["experts"] == "A+B+F"]
    assert len(f) == 3
    status = status_of(f, retries=0, max_interruptions=2)
    assert status.state == "failed" and status.reason == "interrupted 3 times (max_interruptions: 2)"
    assert status_of(f, retries=0).state == "retry"  # without the setting: no cap
