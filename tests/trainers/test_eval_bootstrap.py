"""Bootstrap intervals and paired comparisons on hand-computed fixtures."""
import numpy as np
import pytest

from trainers.eval.aggregate import paper_avg
from trainers.eval.base import EvalItem
from trainers.eval.benchmarks import get_benchmark
from trainers.eval.bootstrap import (benchmark_replicates, bootstrap_eval, interval, items_fingerprint, paired,
                                     resample_indices)


def _gqa(answers, preds):
    items = [EvalItem(f"q{i}", "", "", a) for i, a in enumerate(answers)]
    return get_benchmark("gqa"), items, list(preds)


def _mme(right):
    """One MME existence image per entry of `right`: (question 1 right, question 2 right)."""
    items, preds = [], []
    for n, pair in enumerate(right):
        for q, ok in enumerate(pair):
            items.append(EvalItem(f"existence/img{n}/{q}", "", "", "yes", {"task": "existence", "image_id": f"img{n}"}))
            preds.append("yes" if ok else "no")
    return get_benchmark("mme"), items, preds


def test_indices_depend_only_on_seed_name_and_size():
    a = resample_indices(5, 3, 0, "gqa")
    assert a.shape == (3, 5) and a.min() >= 0 and a.max() < 5
    assert np.array_equal(a, resample_indices(5, 3, 0, "gqa"))
    assert not np.array_equal(a, resample_indices(5, 3, 0, "pope"))
    assert not np.array_equal(a, resample_indices(5, 3, 1, "gqa"))
    with pytest.raises(ValueError, match="0 groups"):
        resample_indices(0, 3, 0, "gqa")


def test_replicates_rescore_each_resample():
    bench, items, preds = _gqa(["red", "two", "cat", "dog"], ["red", "two", "no", "no"])
    reps = benchmark_replicates(bench, items, preds, np.array([[0, 0, 1, 1], [2, 3, 2, 3], [0, 2, 0, 2]]))
    assert [r["gqa"] for r in reps] == [100.0, 0.0, 50.0]


def test_mme_resamples_whole_image_pairs_and_keeps_repeated_draws_apart():
    # image 0: both right, image 1: one right, image 2: none right (acc + acc+ per image pair)
    bench, items, preds = _mme([(1, 1), (1, 0), (0, 0)])
    reps = benchmark_replicates(bench, items, preds, np.array([[0, 0, 2], [1, 1, 1], [0, 1, 2]]))
    # [0, 0, 2]: acc 4/6, acc+ 2 of 3 images (the repeated image counts twice) -> 66.67 + 66.67
    assert reps[0]["mme"] == pytest.approx(400 / 3)
    assert reps[1]["mme"] == pytest.approx(50.0)  # acc 1/2, acc+ 0
    assert reps[2]["mme"] == pytest.approx(50.0 + 100 / 3)  # acc 3/6, acc+ 1/3


def test_percentile_interval_and_paired_difference_by_hand():
    assert interval(list(range(101)), 0.9) == pytest.approx([5.0, 95.0])
    with pytest.raises(ValueError, match="confidence"):
        interval([1.0], 1.0)
    res = paired([1, 2, 3, 4], [1, 1, 4, 2], confidence=0.5)
    # d = [0, 1, -1, 2]: linear quantiles at .25 and .75 of [-1, 0, 1, 2]; 2 wins + half a tie of 4
    assert res["diff_ci"] == pytest.approx([-0.25, 1.25])
    assert res["p_better"] == pytest.approx(0.625)
    assert paired([1, 2, 3, 4], [1, 1, 4, 2], 0.5, maximize=False)["p_better"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match="same non-zero length"):
        paired([1, 2], [1], 0.9)


def test_objective_replicates_are_the_objective_of_each_replicate_and_pair_across_trials():
    gqa = _gqa(["a", "b", "c", "d"], ["a", "b", "x", "x"])
    mme = _mme([(1, 1), (1, 0), (0, 0)])
    out = bootstrap_eval([gqa, mme], paper_avg, resamples=50, seed=3, confidence=0.8)
    g = [r["gqa"] for r in benchmark_replicates(*gqa, resample_indices(4, 50, 3, "gqa"))]
    m = [r["mme"] for r in benchmark_replicates(*mme, resample_indices(3, 50, 3, "mme"))]
    expected = [paper_avg({"gqa": a, "mme": b}) for a, b in zip(g, m)]
    assert out["bootstrap"]["objective"] == pytest.approx(expected, abs=1e-4)
    assert out["objective_ci"] == pytest.approx(interval(expected, 0.8))
    assert out["scores_ci"]["gqa"] == pytest.approx(interval(g, 0.8))
    assert out["bootstrap"]["items"] == items_fingerprint({"gqa": ["q0", "q1", "q2", "q3"],
                                                           "mme": [it.qid for it in mme[1]]})
    # a second trial on the same items that gets one more GQA item right: every replicate is >= ours
    better = bootstrap_eval([_gqa(["a", "b", "c", "d"], ["a", "b", "c", "x"]), mme], paper_avg, resamples=50, seed=3, confidence=0.8)
    diff = np.subtract(better["bootstrap"]["objective"], out["bootstrap"]["objective"])
    assert diff.min() >= -1e-9 and diff.max() > 0
    same = paired(out["bootstrap"]["objective"], out["bootstrap"]["objective"], 0.8)
    assert same == {"diff_ci": [0.0, 0.0], "p_better": 0.5}


def test_interval_covers_the_normal_approximation_on_many_items():
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.7
    bench, items, preds = _gqa(["y"] * 400, ["y" if t else "n" for t in truth])
    lo, hi = bootstrap_eval([(bench, items, preds)], None, resamples=2000, seed=0, confidence=0.95)["scores_ci"]["gqa"]
    p = truth.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / 400) * 100
    assert lo == pytest.approx(100 * p - half, abs=1.0) and hi == pytest.approx(100 * p + half, abs=1.0)


def test_blind_gap_is_the_paired_interval_of_score_minus_blind_score():
    bench, items, preds = _gqa(["a", "b", "c", "d"], ["a", "b", "c", "x"])
    out = bootstrap_eval([(bench, items, preds)], None, resamples=40, seed=0, confidence=0.9, blind={"gqa": ["a", "x", "x", "x"]})
    reps = benchmark_replicates(bench, items, preds, resample_indices(4, 40, 0, "gqa"))
    blind = benchmark_replicates(bench, items, ["a", "x", "x", "x"], resample_indices(4, 40, 0, "gqa"))
    assert out["blind_gap_ci"]["gqa"] == pytest.approx(interval([r["gqa"] - b["gqa"] for r, b in zip(reps, blind)], 0.9))
    assert out["objective_ci"] is None and out["bootstrap"]["objective"] is None
