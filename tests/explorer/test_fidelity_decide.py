"""strategy.fidelity.decide: below_top: every greedy round is decided at the highest rung below
the top with the usual paired comparisons, and only the study's answer trains at the top rung (its
value is the study's best value), continuing its own rung checkpoints, or from the start where the
rungs were a proxy."""
from __future__ import annotations

import pytest
from fidelity_support import RungRunner
from test_fidelity import GREEDY_SH, _by_rung, _run
from test_fidelity_proxy import PROXY, SpecRunner
from test_study_fixtures import PAPER_AVG, PAPER_PATH, study_data

from explorer.strategies import build_strategy
from explorer.study.load import parse_study
from explorer.study.spec import StudyError

BELOW = {**GREEDY_SH, "fidelity": {"schedule": "successive_halving", "decide": "below_top"}}


def test_rounds_are_decided_below_the_top_and_only_the_answer_trains_fully(tmp_path):
    runner = RungRunner()
    spec, outcome, study = _run(tmp_path, BELOW, runner)
    assert outcome.finished and outcome.greedy_path == PAPER_PATH
    tops = {t.user_attrs["experts"] for t in study.get_trials() if t.user_attrs["rung"] == 2}
    assert tops == {"A+B+F+E+C"}  # the answer (the last round that improved), once
    assert outcome.best_value == pytest.approx(PAPER_AVG[frozenset("ABFEC")])  # its full-fidelity value
    # round 1: 4 at 1/4, 2 at 1/2, decided there; the base alone goes straight to 1/2
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 1: {"A+B+C", "A+B+F"}}
    assert _by_rung(study, 0) == {1: {"A+B"}}
    # 1 + (4 + 2) + (3 + 2) + (2 + 1) + 1 rung trials and the answer's full one
    assert len(study.get_trials()) == build_strategy(spec).total_planned() == 17


def test_with_a_proxy_the_answer_trains_from_the_start(tmp_path):
    runner = SpecRunner()
    below = {**BELOW, "max_size": 3, "fidelity": {**BELOW["fidelity"], "proxy": PROXY}}
    _, outcome, study = _run(tmp_path, below, runner)
    top = [s for s in runner.seen if s[2] == 2]
    assert [(k, d.endswith("__proxy"), llm) for k, d, _, llm, *_ in top] == [("r1/A+B+F/s0", False, "tiny-llama")]
    assert all(d.endswith("__proxy") for _, d, r, *_ in runner.seen if r < 2)
    assert outcome.best_value == pytest.approx(PAPER_AVG[frozenset("ABF")])


def test_decide_below_top_is_for_greedy_successive_halving(tmp_path):
    grid = {"type": "grid", "experts": ["A", "B"], "axes": {"fusion": ["channel_concat"]}, "fidelity": {"decide": "below_top"}}
    with pytest.raises(StudyError, match="strategy.fidelity.decide: below_top decides greedy rounds"):
        build_strategy(parse_study(study_data("fid", grid), "fid.yaml", tmp_path))
    asha = {**GREEDY_SH, "fidelity": {"schedule": "asha", "decide": "below_top"}}
    with pytest.raises(StudyError, match="strategy.fidelity.decide: below_top needs schedule successive_halving"):
        build_strategy(parse_study(study_data("fid", asha), "fid.yaml", tmp_path))
