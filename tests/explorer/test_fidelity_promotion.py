"""Promotion by intervals (strategy.fidelity.promotion: interval; decide_early with count): from a
rung, the leader and every candidate its paired interval does not rule out go on, capped by
max_promoted; a leader that beats every other beyond the interval goes on alone, straight to the
top rung, so the answer is still a full-fidelity trial."""
from __future__ import annotations

import pytest
from fidelity_support import RungRunner
from test_fidelity import GREEDY_SH, _by_rung, _run
from test_study_fixtures import PAPER_PATH, study_data

from explorer.strategies.fidelity import Schedule, request_for
from explorer.study.load import parse_study
from explorer.study.spec import FidelitySpec, StudyError

INTERVAL = {**GREEDY_SH, "fidelity": {"schedule": "successive_halving", "promotion": "interval"}}


def test_a_clear_leader_goes_on_alone_and_straight_to_the_top(tmp_path):
    # replicates of sd 0.1: the 3-point gaps of round 1 at 1/4 of the steps are far beyond the interval
    _, outcome, study = _run(tmp_path, INTERVAL, RungRunner(spread=0.1))
    assert outcome.finished and outcome.greedy_path == PAPER_PATH
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 2: {"A+B+F"}}
    assert _by_rung(study, 2) == {0: {"A+B+F+C", "A+B+F+D", "A+B+F+E"}, 2: {"A+B+F+E"}}
    assert len(study.get_trials()) == 14  # promotion by count: 18
    top = [t for t in study.get_trials() if t.user_attrs["rung"] == 2]
    assert all(t.user_attrs["fidelity"]["fraction"] == 1.0 for t in top)  # the answer is a full trial


def test_candidates_within_the_interval_go_on_up_to_the_cap(tmp_path):
    wide = {**INTERVAL, "max_size": 3, "fidelity": {**INTERVAL["fidelity"], "max_promoted": 2}}
    _, outcome, study = _run(tmp_path, wide, RungRunner(spread=10.0))  # every gap within the noise
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 1: {"A+B+F", "A+B+C"},
                                  2: {"A+B+F", "A+B+C"}}
    uncapped = {**INTERVAL, "max_size": 3}
    _, _, study = _run(tmp_path / "uncapped", uncapped, RungRunner(spread=10.0))
    assert _by_rung(study, 1)[1] == _by_rung(study, 1)[2] == {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}


def test_decide_early_ends_a_count_rung_only_for_a_clear_leader(tmp_path):
    early = {**GREEDY_SH, "max_size": 3, "fidelity": {"schedule": "successive_halving", "decide_early": True}}
    _, _, study = _run(tmp_path, early, RungRunner(spread=0.1))
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 2: {"A+B+F"}}
    _, _, study = _run(tmp_path / "wide", early, RungRunner(spread=10.0))  # no clear leader: by count
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 1: {"A+B+C", "A+B+F"}, 2: {"A+B+F"}}
    _, _, study = _run(tmp_path / "blind", early, RungRunner())  # rung trials without intervals: by count
    assert _by_rung(study, 1)[1] == {"A+B+C", "A+B+F"}


def test_the_rung_request_asks_for_intervals_only_when_promotion_needs_them():
    attrs = {"rung": 0}
    assert request_for(Schedule(FidelitySpec(promotion="interval"), True), attrs, None).intervals
    assert request_for(Schedule(FidelitySpec(decide_early=True), True), attrs, None).intervals
    assert not request_for(Schedule(FidelitySpec(), True), attrs, None).intervals


@pytest.mark.parametrize("fidelity, expected", [
    ({"schedule": "asha", "promotion": "interval"}, "strategy.fidelity.promotion: needs schedule successive_halving"),
    ({"schedule": "asha", "decide_early": True}, "strategy.fidelity.decide_early: needs schedule successive_halving"),
    ({"max_promoted": 2}, "strategy.fidelity.max_promoted: caps promotion: interval"),
    ({"promotion": "interval", "alpha": 0.7}, "strategy.fidelity.alpha: Input should be less than 0.5"),
    ({"promotion": "vote"}, "strategy.fidelity.promotion: Input should be 'count' or 'interval'"),
])
def test_bad_promotion_settings_are_one_line(fidelity, expected):
    with pytest.raises(StudyError, match=expected) as err:
        parse_study(study_data("fid", {**GREEDY_SH, "fidelity": fidelity}), "fid.yaml")
    assert str(err.value).startswith("fid.yaml: ") and "\n" not in str(err.value)
