"""A study's expected answer (`expect:`): checked against the strategy before anything runs,
recorded when the study is created, refused when a resumed study's file changes it, and compared
with the outcome in status --json, the export and the terminal (met, or MISSED). And the greedy
stop rule: a round improves only when its leader beats the best so far beyond the paired interval
(strategy.improvement: interval), and the answer is the last round that improved."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_study_fixtures import paper_runner, study_data

from explorer.controller import run_study
from explorer.report import leaderboard as report
from explorer.report import paper_table
from explorer.study import stats
from explorer.study.expectation import compare, summary_line
from explorer.study.load import parse_study
from explorer.study.spec import StudyError
from explorer.study.storage import StorageError, default_storage_url, open_study

# the scripted scores (test_study_fixtures.PAPER_AVG) rank A+B+F first in round 1 and A+B+F+E in round 2
GREEDY = {"type": "greedy", "base": ["A", "B"], "candidates": ["C", "D", "E", "F"], "max_size": 4}
RIGHT = {"answer": ["A", "B", "E", "F"], "path": [["A", "B"], ["A", "B", "F"], ["A", "B", "F", "E"]]}


def _study(tmp_path, name, expect):
    return parse_study(study_data(name, GREEDY, expect=expect), f"{name}.yaml", tmp_path)


@pytest.mark.parametrize("expect,line", [
    ({"answer": ["A", "B", "Z"]}, "expect.answer: Z not in strategy.base or strategy.candidates"),
    ({"answer": ["A", "E"]}, "expect.answer: a greedy study's mixtures all hold strategy.base (A, B)"),
    ({"answer": ["A", "B", "C", "D", "E"]}, "expect.answer: 5 experts, over strategy.max_size 4"),
    ({"answer": ["A", "B"], "path": [["A", "B"], ["B", "C"]]},
     "expect.path[1]: a greedy study's mixtures all hold strategy.base (A, B)"),
    ({"answer": []}, "expect.answer: List should have at least 1 item"),
    ({"answer": ["A", "B", "E"], "rounds": 3},
     "expect.rounds: 3 rounds, but the answer needs at least 1 and strategy.max_size allows at most 2"),
    ({"answer": ["A", "B", "E", "F"], "rounds": 1},
     "expect.rounds: 1 rounds, but the answer needs at least 2 and strategy.max_size allows at most 2"),
])
def test_an_expectation_the_strategy_cannot_reach_is_one_line_before_anything_runs(tmp_path, expect, line):
    with pytest.raises(StudyError) as err:
        _study(tmp_path, "bad", expect)
    assert str(err.value).startswith(f"bad.yaml: {line}") and "\n" not in str(err.value)


def test_the_outcome_is_compared_with_the_expectation_met_and_missed(tmp_path):
    url = default_storage_url(tmp_path)
    for name, expect, met in [("right", RIGHT, True), ("wrong", {"answer": ["A", "B", "E"]}, False)]:
        spec = _study(tmp_path, name, expect)
        run_study(spec, url, tmp_path, runner=paper_runner)
        doc = report.status_json(open_study(spec, url))
        exp = doc["expectation"]
        assert exp["selected"] == "A+B+E+F" and exp["answer_met"] is met and exp["met"] is met
        line = summary_line(exp)
        assert line.endswith(": met") if met else "MISSED" in line
        assert line[1:] in paper_table.export(open_study(spec, url))
    assert exp["path"] is None  # the wrong one expected no path
    right = report.status_json(open_study(_study(tmp_path, "right", RIGHT), url))["expectation"]
    assert right["leaders"] == ["A+B", "A+B+F", "A+B+E+F"] and right["path_met"] is True


def test_a_resumed_study_refuses_an_added_or_edited_expectation(tmp_path):
    url = default_storage_url(tmp_path)
    run_study(_study(tmp_path, "s", RIGHT), url, tmp_path, runner=paper_runner)
    with pytest.raises(StorageError, match=r"expect: differs from the expectation the study was created with"):
        open_study(_study(tmp_path, "s", {"answer": ["A", "B", "F"]}), url)
    open_study(_study(tmp_path, "s", RIGHT), url)  # the same one resumes
    run_study(_study(tmp_path, "t", None), url, tmp_path, runner=paper_runner)
    with pytest.raises(StorageError, match=r"expect: added after \d+ trials ran"):
        open_study(_study(tmp_path, "t", RIGHT), url)


def test_nothing_is_met_or_missed_before_the_study_finishes():
    partial = compare({"answer": ["A", "B", "E"]}, "A+B", [{"experts": "A+B"}], finished=False)
    assert partial["met"] is None and partial["selected"] == "A+B"
    assert summary_line(partial) == "expected answer A+B+E: the study has not finished"
    assert compare(None, "A+B", [], finished=True) is None


# ---- the stop rule: a round improves only beyond the paired interval ----
VALUES = {frozenset(k): v for k, v in {
    "AB": 600.0, "ABC": 610.0, "ABD": 605.0, "ABE": 650.0, "ABF": 620.0,  # round 1: E, clearly
    "ABEC": 640.0, "ABED": 630.0, "ABEF": 651.0,  # round 2: F by 1 point, within the noise
    "ABEFC": 645.0, "ABEFD": 640.0}.items()}  # round 3 (by the mean only): no better
NOISE = np.random.default_rng(0).normal(0.0, 6.0, 300)  # item noise every trial shares (same items)


def replicate_runner(job):
    """A trial's objective with bootstrap replicates: shared item noise plus its own (sd 6)."""
    key = frozenset(job.user_attrs["experts"].split("+"))
    value = VALUES[key]
    own = np.random.default_rng(zlib.crc32("".join(sorted(key)).encode())).normal(0.0, 6.0, 300)
    result = {"objective": value, "objective_name": "avg", "scores": {"avg": value},
              "bootstrap": {"items": "same", "confidence": 0.95, "objective": (value + NOISE + own).round(4).tolist()}}
    Path(job.trial_dir).mkdir(parents=True, exist_ok=True)
    (Path(job.trial_dir) / "result.json").write_text(json.dumps(result))
    return result


def test_improves_needs_the_paired_interval_or_the_mean():
    base = {"mean": 10.0, "replicates": np.full(100, 10.0) + NOISE[:100], "confidence": 0.95}
    near = {"mean": 10.5, "replicates": base["replicates"] + 0.5 + NOISE[100:200], "confidence": 0.95}
    far = {"mean": 40.0, "replicates": base["replicates"] + 30.0 + NOISE[100:200], "confidence": 0.95}
    assert stats.improves(near, base, True, "mean") and not stats.improves(near, base, True, "interval")
    assert stats.improves(far, base, True, "interval") and not stats.improves(base, far, True, "interval")
    assert stats.improves(base, far, False, "interval")  # minimising: lower beyond the interval
    assert stats.improves(near, None, True, "interval")  # the first round always improves
    flat = {"mean": 10.5, "replicates": None, "confidence": 0.95}
    assert stats.improves(flat, base, True, "interval")  # no replicates: by the mean


@pytest.mark.parametrize("rule", ["interval", "mean"])
def test_a_round_within_the_interval_stops_the_study_and_the_answer_stays(tmp_path, rule):
    strategy = {**GREEDY, "max_size": 5, "stop_on_no_improvement": True, "improvement": rule}
    expect = {"answer": ["A", "B", "E"], "path": [["A", "B"], ["A", "B", "E"]], "rounds": 2}
    spec = parse_study(study_data(f"stop_{rule}", strategy, expect=expect), "stop.yaml", tmp_path)
    url = default_storage_url(tmp_path)
    outcome = run_study(spec, url, tmp_path, runner=replicate_runner)
    doc = report.status_json(open_study(spec, url))
    path = doc["greedy_path"]
    assert [len(p["candidates"]) for p in path][:3] == [1, 4, 3]  # round 2 ran over the 3 left: carried forward
    if rule == "interval":  # A+B+E+F leads round 2 by 1 point, inside the interval: the study stops there
        assert [p["experts"] for p in path] == ["A+B", "A+B+E", "A+B+E+F"]
        assert [p["improved"] for p in path] == [True, True, False]
        assert outcome.stopped_reason == "round 2: no improvement"
    else:  # by the mean A+B+E+F improves; round 3, the size cap's, does not
        assert [p["improved"] for p in path] == [True, True, True, False]
        assert outcome.stopped_reason == "maximum size reached"
    answer = "A+B+E" if rule == "interval" else "A+B+E+F"
    assert outcome.best_experts == doc["best"]["experts"] == answer
    assert [p["experts"] for p in path if p["best"]] == [answer]
    exp = doc["expectation"]  # the path is the selection path: round 2's leader did not improve
    assert exp["answer_met"] is exp["path_met"] is exp["rounds_met"] is exp["met"] is (rule == "interval")
    assert exp["leaders"] == (["A+B", "A+B+E"] if rule == "interval" else ["A+B", "A+B+E", "A+B+E+F"])
    assert exp["rounds_run"] == (2 if rule == "interval" else 3)
    assert ("ran 2: met" if rule == "interval" else "ran 3: MISSED") in summary_line(exp)
