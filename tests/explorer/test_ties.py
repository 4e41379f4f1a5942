"""Seeds and ties in the greedy decision: statistically tied leaders marked in the path, progress,
leaderboard and export; a partly failed candidate said to be so; racing extra seeds of only the
tied leaders (strategy.resolve_ties), resumed after a kill during racing."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from test_study_fixtures import (
    HOLD_MARK,
    PAPER_AVG,
    child_command,
    letters,
    study_data,
    tied_runner,
)

from explorer.report import paper_table
from explorer.report import leaderboard as report
from explorer.controller import run_study
from explorer.cli.progress import StudyProgress, render_line
from explorer.study.stats import BOOTSTRAP_ATTR
from explorer.study.storage import default_storage_url, open_study
from explorer.study.load import parse_study
from explorer.cli.terminal import leaderboard_table
from explorer.tracking.tracker import MlflowTracker, default_artifact_root, default_tracking_uri

GREEDY = {"type": "greedy", "base": ["A", "B"]}
RACE = {**GREEDY, "resolve_ties": {"extra_seeds": 2, "max_extra_trials": 4}}
COMMON = np.random.default_rng(0).normal(0.0, 5.0, 400)  # item noise every trial shares (same items)


def _run(tmp_path, strategy, runner, tracker=None, **extra):
    spec = parse_study(study_data("ties", strategy, **extra), "ties.yaml", tmp_path)
    seen: list[dict] = []
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner, progress=seen.append,
                        tracker=tracker)
    return outcome, open_study(spec, default_storage_url(tmp_path)), seen


def bootstrap_runner(job):
    """The paper's Avg with paired replicates: shared item noise plus the trial's own (sd 2)."""
    value = PAPER_AVG[letters(job)]
    own = np.random.default_rng(zlib.crc32(job.user_attrs["key"].encode())).normal(0.0, 2.0, 400)
    reps = (value + COMMON + own).round(4).tolist()
    result = {"objective": value, "objective_name": "avg", "scores": {"gqa": value / 10},
            "objective_ci": [value - 9.0, value + 9.0], "scores_ci": {"gqa": [value / 10 - 1, value / 10 + 1]},
            "blind_objective": 400.0, "blind_scores": {"gqa": 40.0}, "blind_gap_ci": {"gqa": [20.0, 30.0]},
            "bootstrap": {"items": "same", "confidence": 0.95, "objective": reps}}
    Path(job.trial_dir).mkdir(parents=True, exist_ok=True)
    (Path(job.trial_dir) / "result.json").write_text(json.dumps(result))
    return result


def test_an_exact_tie_is_marked_in_the_path_progress_and_report(tmp_path):
    outcome, study, seen = _run(tmp_path, GREEDY, tied_runner)
    r1 = outcome.path[1]
    assert r1["best_experts"] == "A+B+E" and r1["tied"] == ["A+B+E", "A+B+F"]  # equal: the earlier leads
    assert r1["tie_note"] == "A+B+E tied with A+B+F (P=0.50)"
    assert [e["tied"] for e in outcome.path if e["round"] != 1] == [[], [], [], []]
    assert any(i.get("tie") == "round 1: A+B+E tied with A+B+F (P=0.50)" for i in seen)
    progress = StudyProgress(study)
    progress.update(round=2, tie="round 1: A+B+E tied with A+B+F (P=0.50)")
    assert "best 661.0 A+B+E+F+C (#8)  TIE round 1: A+B+E tied with A+B+F (P=0.50)" in render_line(progress.current())
    path = report.greedy_path(study)
    assert path[1]["tied"] == ["A+B+E", "A+B+F"] and path[1]["std"] is None  # one seed: no spread, not 0.0
    assert "A+B+E (655.0) ~ tied with A+B+F" in report.format_path(path)
    assert "Greedy path: " in paper_table.export(study) and "~ tied with A+B+F" in paper_table.export(study)


@pytest.fixture(scope="module")
def paired_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("paired")
    tracker = MlflowTracker(default_tracking_uri(work), "ties", default_artifact_root(work))
    outcome, study, _ = _run(work, GREEDY, bootstrap_runner, tracker=tracker)
    tracker.on_study_end(study)
    return outcome, study, tracker


def test_mlflow_carries_intervals_blind_scores_and_ties(paired_study):
    outcome, study, tracker = paired_study
    runs = {r.data.tags.get("experts"): r for r in tracker.client.search_runs([tracker.experiment_id])}
    m = runs["A+B+F"].data.metrics
    assert (m["ci/objective/lo"], m["ci/objective/hi"]) == (665.3 - 9.0, 665.3 + 9.0)
    assert m["ci/score/gqa/hi"] == pytest.approx(67.53) and m["blind/gqa"] == 40.0 and m["blind/objective"] == 400.0
    c = {x["experts"]: x for x in outcome.path[1]["candidates"]}["A+B+C"]
    m = runs["A+B+C"].data.metrics
    assert m["compare/p_beats_leader"] == pytest.approx(c["p_beats_leader"])
    assert [m["compare/diff_lo"], m["compare/diff_hi"]] == pytest.approx(c["diff_ci"])
    assert runs["A+B+F+C"].data.tags["tied_with_leader"] == "true" and runs["A+B+D"].data.tags["tied_with_leader"] == "false"
    parent = tracker.client.get_run(tracker.parent_run_id).data.tags
    assert parent["round.2.leader"] == "A+B+F+E" and parent["round.2.tied"] == ",".join(outcome.path[2]["tied"])
    assert parent["tied_with_best"].split(",")[0] == "A+B+F+E+C"


def test_paired_replicates_give_intervals_probabilities_and_leaderboard_ties(paired_study):
    outcome, study, _ = paired_study
    r1 = {c["experts"]: c for c in outcome.path[1]["candidates"]}
    lead = r1["A+B+F"]
    assert lead["leader"] and outcome.path[1]["best_experts"] == "A+B+F"
    trials = {t.user_attrs["experts"]: t for t in study.get_trials()}
    rep = {k: np.array(t.system_attrs[BOOTSTRAP_ATTR]["objective"]) for k, t in trials.items()}
    for experts in ("A+B+C", "A+B+D", "A+B+E"):  # paired: the difference replicate by replicate
        d = rep[experts] - rep["A+B+F"]
        assert r1[experts]["p_beats_leader"] == pytest.approx(np.mean(d > 0) + 0.5 * np.mean(d == 0))
        assert r1[experts]["diff_ci"] == pytest.approx(np.quantile(d, [0.025, 0.975]).tolist())
        assert r1[experts]["paired"] is True
    assert r1["A+B+D"]["p_beats_leader"] < 0.01 and not r1["A+B+D"]["tied"]  # 11.7 behind
    assert all(c["tied"] == (c["p_beats_leader"] >= 0.05) for c in r1.values() if not c["leader"])
    r2 = {c["experts"]: c for c in outcome.path[2]["candidates"]}
    assert r2["A+B+F+C"]["tied"] and outcome.path[2]["tied"][0] == "A+B+F+E"  # 3.5 behind, paired sd ~2.8
    rows = report.leaderboard(study)
    assert rows[0]["experts"] == "A+B+F+E+C" and rows[0]["ci"] == pytest.approx(
        np.quantile(rep["A+B+F+E+C"], [0.025, 0.975]).tolist())
    by = {r["experts"]: r for r in rows}
    assert by["A+B+F+E"]["tied"] and not by["A+B+D"]["tied"] and by["A+B+F+E"]["blind"] == 400.0
    doc = report.status_json(study)
    first = doc["trials"][0]
    assert first["objective_ci"] == [649.3, 667.3] and first["scores_ci"] == {"gqa": [64.83, 66.83]}
    assert first["blind_scores"] == {"gqa": 40.0}
    assert doc["leaderboard"] == rows and doc["greedy_path"][1]["tied"] == outcome.path[1]["tied"]
    text = paper_table.export(study)
    assert "666.5 (" in text and "Blind control (every image replaced by a blank one" in text
    assert "| 5 | A+B+F+E+C | 40.0* | 400.0 |" in text  # GQA needs the image beyond its interval
    assert "~best (P=" in text


def test_leaderboard_fits_80_columns_with_constant_settings_in_the_header(paired_study):
    from rich.console import Console

    study = paired_study[1]
    console = Console(width=80, record=True)
    console.print(leaderboard_table(study))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Avg" in text and "(1000-pt)" in text and "95% CI" in text and "blind" in text
    assert "fusion channel_concat" in text  # the same in every row: one header line, no column
    assert "A+B+F+E+C" in text and "666.5" in text


def test_a_partly_failed_candidate_that_leads_says_so(tmp_path):
    def runner(job):
        if job.user_attrs["experts"] == "A+B+F" and job.user_attrs["seed"] == 1:
            raise RuntimeError("rank 0 exited with code 1")
        return tied_runner(job) if job.user_attrs["seed"] == 0 else {"objective": tied_runner(job)["objective"] - 1}

    outcome, study, _ = _run(tmp_path, {**GREEDY, "repeats": 2, "max_size": 3}, runner)
    r1 = outcome.path[1]
    assert r1["best_experts"] == "A+B+F"  # 660 on its one seed against 659.5 on two
    assert r1["partial_note"] == "A+B+F leads on 1 of 2 seeds (its other seeds failed)"
    row = report.leaderboard(study)[0]
    assert (row["experts"], row["n"], row["planned"], row["partial"]) == ("A+B+F", 1, 2, True)
    assert row["note"] == "1 of 2 seeds (the others failed); ranked on those"
    assert report.leaderboard(study)[1]["std"] == pytest.approx(np.std([655.0, 654.0], ddof=1))


def test_racing_runs_extra_seeds_of_only_the_tied_leaders_and_decides_on_all(tmp_path):
    outcome, study, _ = _run(tmp_path, RACE, tied_runner)
    trials = study.get_trials()
    extra = sorted((t.user_attrs["experts"], t.user_attrs["seed"]) for t in trials if t.user_attrs["seed"] > 0)
    assert extra == [("A+B+E", 1), ("A+B+E", 2), ("A+B+F", 1), ("A+B+F", 2)]
    assert all(t.user_attrs["round"] == 1 and t.state == TrialState.COMPLETE for t in trials if t.user_attrs["seed"])
    r1 = outcome.path[1]
    assert r1["racing"] == {"before": ["A+B+E", "A+B+F"], "seeds": [1, 2]}
    assert r1["best_experts"] == "A+B+F" and r1["tied"] == []  # the extra seeds decide for F
    assert outcome.greedy_path == ["A+B", "A+B+F", "A+B+F+E", "A+B+F+E+C", "A+B+F+E+C+D"]
    assert len(trials) == 11 + 4
    assert report.greedy_path(study)[1]["experts"] == "A+B+F"


def test_racing_within_a_small_budget_races_only_what_fits(tmp_path):
    outcome, study, _ = _run(tmp_path, {**GREEDY, "resolve_ties": {"extra_seeds": 2, "max_extra_trials": 3}},
                             tied_runner)
    assert len(study.get_trials()) == 11 and "racing" not in outcome.path[1]  # 3 trials cannot race two
    assert outcome.path[1]["tied"] == ["A+B+E", "A+B+F"]


@pytest.mark.slow
def test_a_kill_during_racing_resumes_the_racing_trials(tmp_path):
    data = study_data("racing", RACE, resources={"max_concurrent_trials": 2}, grace_period_s=3)
    url = default_storage_url(tmp_path)
    proc = subprocess.Popen(child_command(tmp_path, data, url, "run", 0.2, tmp_path / "log", hold_from=5, tied=True),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while not (tmp_path / HOLD_MARK).exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    running = [t for t in optuna.load_study(study_name="racing", storage=url).get_trials()
               if t.state == TrialState.RUNNING]
    assert running and all(t.user_attrs["seed"] > 0 for t in running)  # killed during racing
    outcome = run_study(parse_study(data, "racing.yaml", tmp_path), url, tmp_path, runner=tied_runner)
    assert outcome.finished and outcome.path[1]["best_experts"] == "A+B+F"
    trials = optuna.load_study(study_name="racing", storage=url).get_trials()
    done = Counter(t.user_attrs["key"] for t in trials if t.state == TrialState.COMPLETE)
    assert len(done) == 15 and set(done.values()) == {1}


def test_new_keys_at_their_defaults_keep_the_fingerprint_and_racing_changes_it(tmp_path):
    plain = parse_study(study_data("fp", GREEDY), "fp.yaml", tmp_path)
    explicit = parse_study(study_data("fp", {**GREEDY, "seed_scope": "sft", "tie_threshold": 0.05}), "fp.yaml", tmp_path)
    racing = parse_study(study_data("fp", RACE), "fp.yaml", tmp_path)
    assert plain.fingerprint() == explicit.fingerprint() != racing.fingerprint()
    # studies stored before these keys existed: strategy, space and objective as they dumped then
    before = {k: v for k, v in plain.strategy.model_dump(mode="json").items()
              if k not in ("seed_scope", "tie_threshold", "resolve_ties", "fidelity", "improvement")}
    blob = json.dumps({"strategy": before, "space": plain.space.model_dump(mode="json"),
                       "objective": plain.objective.model_dump(mode="json")}, sort_keys=True)
    assert plain.fingerprint() == hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_sft_scope_repeats_share_the_pre_alignment_seed(tmp_path):
    from explorer.study.trial_specs import build_trial_spec
    from explorer.strategies import build_strategy

    for scope, aligns in (("sft", {0}), ("all", {0, 1, 2})):
        spec = parse_study(study_data("seeds", {**GREEDY, "repeats": 3, "seed_scope": scope}), "s.yaml", tmp_path)
        items = [p for p in build_strategy(spec).plan([]).items if p.user_attrs["round"] == 0]  # round 1 starts beside
        specs = [build_trial_spec(spec, p.params, p.user_attrs) for p in items]
        assert [s.seed for s in specs] == [0, 1, 2] and {s.align_seed for s in specs} == aligns
