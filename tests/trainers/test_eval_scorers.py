"""Every harness's figures in both scorer profiles, on answers scored by hand under the scripts'
rules (the per-rule fixtures are in test_eval_scorer_rules.py)."""
import pytest

from trainers.data.errors import UnknownNameError
from trainers.eval import get_benchmark
from trainers.eval.base import SCORER_PROFILES, EvalItem
from trainers.eval.normalize import vqa_accuracy


def item(qid, answer, **meta):
    return EvalItem(qid=qid, image="x.jpg", prompt="q", answer=answer, meta=meta)


def test_profiles_and_their_errors():
    assert SCORER_PROFILES == ("official", "lmms_eval")
    assert get_benchmark("gqa").profile == "official"
    assert get_benchmark("gqa", "lmms_eval").profile == "lmms_eval"
    with pytest.raises(UnknownNameError, match="unknown scorer profile 'vlmevalkit'; known: lmms_eval, official"):
        get_benchmark("gqa", "vlmevalkit")


# ---- TextVQA / VQA accuracy (one processor for both profiles) ----
def test_vqa_accuracy_by_hand():
    # "Two" -> "2"; 3 humans said 2/two, 7 said 3: leaving out a "2" leaves 2 matches (2/3),
    # leaving out a "3" leaves 3 (1.0) -> (3*2/3 + 7*1)/10 = 0.9
    assert vqa_accuracy("Two", ["two", "two", "2"] + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("the dog", ["dog"] * 10) == 1.0
    # one match: 9 subsets keep it (1/3), one loses it (0) -> 0.3
    assert vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)
    assert vqa_accuracy("im", ["i'm"] * 10) == 0.0  # the official table leaves "im" as it is


@pytest.mark.parametrize("profile", SCORER_PROFILES)
def test_textvqa_summary(profile):
    bench = get_benchmark("textvqa", profile)
    items = [item("1", ["dog"] * 10), item("2", ["cat"] + ["dog"] * 9)]
    assert bench.summarize(items, ["The dog", "cat"]) == {"textvqa": pytest.approx(65.0)}


# ---- GQA ----
@pytest.mark.parametrize("profile,right", [("official", [1.0, 0.0, 0.0, 0.0, 1.0]),
                                           ("lmms_eval", [1.0, 0.0, 1.0, 0.0, 1.0])])
def test_gqa_summary_and_types(profile, right):
    bench = get_benchmark("gqa", profile)
    items = [item("1", "yes", structural="verify", semantic="attr"), item("2", "dog"),
             item("3", "left", structural="choose", semantic="rel"),
             item("4", "red", structural="query", semantic="attr"),
             item("5", "t-shirt")]
    preds = ["Yes.", "the dog", "Left!", "blue", "T-shirt"]
    assert [bench.score_item(i, p) for i, p in zip(items, preds)] == right
    out = bench.summarize(items, preds)
    assert out["gqa"] == pytest.approx(100 * sum(right) / 5)
    assert out["gqa/structural/verify"] == 100.0 and out["gqa/structural/query"] == 0.0
    assert out["gqa/semantic/attr"] == 50.0 and out["gqa/structural/choose"] == 100.0 * right[2]


# ---- POPE ----
LABELS = ["yes", "yes", "yes", "no", "no", "no"]
PREDS = ["Yes", "No.", "I cannot tell", "yes", "no", "No"]


def test_pope_official_metrics_by_hand():
    bench = get_benchmark("pope")
    items = [item(f"random/{i}", g, split="random") for i, g in enumerate(LABELS)]
    # parsed: yes no yes yes no no -> TP=2 FN=1 FP=1 TN=2
    out = bench.summarize(items, PREDS)
    assert out["pope/random/precision"] == pytest.approx(200 / 3)
    assert out["pope/random/recall"] == pytest.approx(200 / 3)
    assert out["pope/random/f1"] == pytest.approx(200 / 3)
    assert out["pope/random/accuracy"] == pytest.approx(200 / 3)
    assert out["pope/random/yes_ratio"] == pytest.approx(50.0)
    # a second split, all right (F1 100): the headline is the mean F1 over the splits
    items2 = items + [item("popular/0", "yes", split="popular"), item("popular/1", "no", split="popular")]
    out2 = bench.summarize(items2, PREDS + ["yes", "no"])
    assert out2["pope/popular/f1"] == 100.0 and out2["pope"] == pytest.approx((200 / 3 + 100) / 2)


@pytest.mark.parametrize("profile", SCORER_PROFILES)
def test_pope_f1_without_yes_answers_is_flagged_undefined(profile):
    bench = get_benchmark("pope", profile)
    items = [item(f"random/{i}", g, split="random") for i, g in enumerate(LABELS)]
    out = bench.summarize(items, ["no"] * len(items))  # a blind model that always says no
    assert out["pope"] == 0.0 and out["pope/f1_undefined"] == 1.0
    assert bench.undefined(out) == "F1 undefined on 1 split(s): no yes answers (precision 0/0)"
    ok = bench.summarize(items, PREDS)
    assert ok["pope/f1_undefined"] == 0.0 and bench.undefined(ok) is None
    assert get_benchmark("gqa").undefined({"gqa": 0.0}) is None


def test_pope_lmms_eval_metrics_by_hand():
    # lmms-eval's aggregation functions give these on this fixture: exact "yes"/"no" only; "No."
    # and "I cannot tell" are wrong but neither is a miss for recall; yes-ratio of the labels
    bench = get_benchmark("pope", "lmms_eval")
    items = [item(f"random/{i}", g, split="random") for i, g in enumerate(LABELS)]
    out = bench.summarize(items, PREDS)
    assert out["pope/random/accuracy"] == pytest.approx(50.0)
    assert out["pope/random/precision"] == pytest.approx(50.0)
    assert out["pope/random/recall"] == pytest.approx(100.0)
    assert out["pope/random/f1"] == pytest.approx(200 / 3)
    assert out["pope/random/yes_ratio"] == pytest.approx(50.0)
    # headline: F1 over all items pooled (TP=2 FP=1 FN=0 -> 0.8), not the mean over splits
    items2 = items + [item("popular/0", "yes", split="popular"), item("popular/1", "no", split="popular")]
    out2 = bench.summarize(items2, PREDS + ["yes", "no"])
    assert out2["pope/popular/f1"] == 100.0 and out2["pope"] == pytest.approx(80.0)


# ---- MME ----
def _mme(task, img, n, ans):
    return EvalItem(qid=f"{task}/{img}/{n}", image="x", prompt="q", answer=ans, meta={"task": task, "image_id": img})


@pytest.mark.parametrize("profile,count", [("official", 0.0), ("lmms_eval", 200.0)])
def test_mme_acc_plus_pairs(profile, count):
    bench = get_benchmark("mme", profile)
    items = [_mme("existence", "a", 1, "yes"), _mme("existence", "a", 2, "no"),
             _mme("existence", "b", 1, "yes"), _mme("existence", "b", 2, "no"),
             _mme("count", "c", 1, "no"), _mme("count", "c", 2, "yes"),
             _mme("code_reasoning", "d", 1, "yes"), _mme("code_reasoning", "d", 2, "no")]
    preds = ["Yes", "No.", "Yes, it is", "yes", "n", "y", "yes", "no"]
    out = bench.summarize(items, preds)
    assert out["mme/existence/acc"] == 75.0 and out["mme/existence/acc_plus"] == 50.0
    assert out["mme/existence"] == 125.0
    assert out["mme/count"] == count  # "n"/"y" are other officially, no/yes for lmms-eval
    assert out["mme/perception"] == 125.0 + count and out["mme"] == 125.0 + count
    assert out["mme/cognition"] == 200.0


# ---- ScienceQA-IMG ----
@pytest.mark.parametrize("profile,right", [("official", [1.0, 1.0, 0.0, 0.0, 0.0]),
                                           ("lmms_eval", [0.0, 1.0, 0.0, 1.0, 1.0])])
def test_scienceqa_summary(profile, right):
    bench = get_benchmark("scienceqa_img", profile)
    items = [item(str(i), gold, options=["cat", "dog", "bird"]) for i, gold in enumerate("BACBC")]
    preds = ["The answer is B.", "A", "The answer is A. The answer is C.", "b", "C."]
    assert [bench.score_item(i, p) for i, p in zip(items, preds)] == right
    assert bench.summarize(items, preds) == {"scienceqa_img": pytest.approx(100 * sum(right) / 5)}


# ---- OCRBench ----
@pytest.mark.parametrize("profile,count", [("official", 3), ("lmms_eval", 4)])
def test_ocrbench_summary(profile, count):
    bench = get_benchmark("ocrbench", profile)
    items = [item("1", ["cat"], dataset_name="IIIT5K", type="Regular Text Recognition"),
             item("2", ["dog"], dataset_name="IIIT5K", type="Regular Text Recognition"),
             item("3", ["4"], dataset_name="DocVQA", type="Doc-oriented VQA"),
             item("4", ["a+b"], dataset_name="HME100k", type="Handwritten Mathematical Expression Recognition"),
             item("5", ["cow"], dataset_name="IIIT5K", type="Regular Text Recognition")]
    out = bench.summarize(items, ["CAT", "horse", "it is 4", "a + b", "ＣＯＷ"])
    assert out["ocrbench/count"] == count and out["ocrbench"] == pytest.approx(count * 200.0)
    assert out["ocrbench/Regular Text Recognition"] == count - 2


# ---- MMMU ----
@pytest.mark.parametrize("profile,expected", [("official", 25.0), ("lmms_eval", 50.0)])
def test_mmmu_summary(profile, expected):
    bench = get_benchmark("mmmu", profile)
    items = [item("v1", "B", type="multiple-choice", options=["x", "y"]), item("v2", "7", type="open", options=[]),
             item("v3", "5", type="open", options=[]), item("v4", "A", type="multiple-choice", options=["p", "q"])]
    # "B" right in both; "seven" and "5kg" name no number; "NASA": a seeded guess (B for v4)
    # officially, lmms-eval's "A " finds A
    assert bench.summarize(items, ["(B)", "seven", "It weighs 5kg", "NASA"]) == {"mmmu": expected}
