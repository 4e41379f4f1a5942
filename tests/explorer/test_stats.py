"""Candidate statistics on hand-made trials: seed mean and spread, seed-resampled replicates,
paired comparison with the leader, ties and their wording."""
from types import SimpleNamespace

import numpy as np
import pytest

from explorer.study.stats import BOOTSTRAP_ATTR, bootstrap_record, candidate, compare, tie_note, tied_labels


def trial(number, value, reps=None, items="i"):
    attrs = {} if reps is None else {BOOTSTRAP_ATTR: {"items": items, "confidence": 0.5, "objective": reps}}
    return SimpleNamespace(number=number, value=value, system_attrs=attrs)


def test_one_seed_replicates_are_the_trials_and_no_spread():
    c = candidate("x", [trial(0, 2.5, [1.0, 2.0, 3.0, 4.0])])
    assert (c["mean"], c["std"], c["n"], c["planned"], c["partial"]) == (2.5, None, 1, 1, False)
    assert c["replicates"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert c["ci"] == pytest.approx([1.75, 3.25])  # confidence 0.5: linear quantiles .25 and .75
    assert c["paired_items"] == "i"
    bare = candidate("y", [trial(1, 7.0)])
    assert bare["ci"] is None and bare["replicates"].tolist() == [7.0] * 1000


def test_seeds_are_resampled_per_replicate():
    rows = [[0.0, 10.0, 20.0], [100.0, 110.0, 120.0]]
    c = candidate("two-seeds", [trial(0, 10.0, rows[0]), trial(1, 110.0, rows[1])], planned=3)
    assert c["std"] == pytest.approx(np.std([10.0, 110.0], ddof=1)) and c["partial"] and c["planned"] == 3
    for b, rep in enumerate(c["replicates"]):  # each replicate: the mean of two seeds drawn from the pair
        assert rep in {rows[0][b], rows[1][b], (rows[0][b] + rows[1][b]) / 2}
    again = candidate("two-seeds", [trial(0, 10.0, rows[0]), trial(1, 110.0, rows[1])])
    assert again["replicates"].tolist() == c["replicates"].tolist()  # deterministic per label


def test_compare_marks_ties_and_keeps_the_earlier_of_equal_means():
    a = candidate("a", [trial(0, 5.0, [4.0, 5.0, 6.0, 5.0])])
    b = candidate("b", [trial(1, 5.0, [5.0, 5.0, 5.0, 5.0])])
    c = candidate("c", [trial(2, 1.0, [0.0, 1.0, 2.0, 1.0])])
    lead = compare([a, b, c], maximize=True, threshold=0.05)
    assert lead is a and a["leader"] and a["tied"]
    # b - a = [1, 0, -1, 0]: one win and two ties of four -> 0.25 + 0.25
    assert b["p_beats_leader"] == pytest.approx(0.5) and b["tied"] and b["diff"] == 0.0
    assert c["p_beats_leader"] == 0.0 and not c["tied"] and c["diff_ci"] == pytest.approx([-4.0, -4.0])
    assert tied_labels([a, b, c]) == ["a", "b"] and tie_note([a, b, c]) == "a tied with b (P=0.50)"
    low = compare([a, c], maximize=False)
    assert low is c and a["p_beats_leader"] == 0.0


def test_bootstrap_record_keeps_only_what_pairing_needs():
    assert bootstrap_record({"objective": 1.0}) is None
    rec = bootstrap_record({"bootstrap": {"items": "f", "confidence": 0.9, "seed": 0, "objective": [1.0, 2.0]}})
    assert rec == {"items": "f", "confidence": 0.9, "objective": [1.0, 2.0]}
