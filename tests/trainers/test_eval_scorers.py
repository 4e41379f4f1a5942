"""Every scorer against answers scored by hand under the benchmark's official rule."""
import pytest

from trainers.eval import get_benchmark
from trainers.eval.base import EvalItem
from trainers.eval.benchmarks.gqa import normalize_gqa_answer
from trainers.eval.benchmarks.mmmu_parse import eval_open, parse_multi_choice, parse_open
from trainers.eval.benchmarks.ocrbench import ocrbench_match
from trainers.eval.benchmarks.pope import parse_yes_no
from trainers.eval.benchmarks.scienceqa_img import parse_choice
from trainers.eval.normalize import normalize_vqa_answer, vqa_accuracy


def item(qid, answer, **meta):
    return EvalItem(qid=qid, image="x.jpg", prompt="q", answer=answer, meta=meta)


# ---- TextVQA / VQA accuracy ----
@pytest.mark.parametrize("raw,norm", [
    ("Two", "2"), ("the dog", "dog"), ("Dog.", "dog"), ("dont", "don't"), ("red-white", "red white"),
    ("1,000", "1000"), ("3.5", "3.5"), ("A man's hat!", "man 's hat"), ("  None ", "0"),
])
def test_vqa_normalisation(raw, norm):
    assert normalize_vqa_answer(raw) == norm


def test_vqa_accuracy_by_hand():
    # "Two" -> "2"; 3 humans said 2/two, 7 said 3: leaving out a "2" leaves 2 matches (2/3),
    # leaving out a "3" leaves 3 (1.0) -> (3*2/3 + 7*1)/10 = 0.9
    assert vqa_accuracy("Two", ["two", "two", "2"] + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("the dog", ["dog"] * 10) == 1.0
    assert vqa_accuracy("Dog.", ["dog"] * 10) == 1.0
    # one match: 9 subsets keep it (1/3), one loses it (0) -> 0.3
    assert vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)
    assert vqa_accuracy("bird", ["dog"] * 10) == 0.0


def test_textvqa_summary():
    bench = get_benchmark("textvqa")
    items = [item("1", ["dog"] * 10), item("2", ["cat"] + ["dog"] * 9)]
    assert bench.summarize(items, ["The dog", "cat"]) == {"textvqa": pytest.approx(65.0)}


# ---- GQA ----
def test_gqa_exact_match_after_normalisation():
    bench = get_benchmark("gqa")
    assert normalize_gqa_answer(" Left. ") == "left"
    items = [item("1", "yes"), item("2", "dog"), item("3", "left"), item("4", "red")]
    preds = ["Yes.", "the dog", "  LEFT", "blue"]  # GQA's rule keeps articles: "the dog" is wrong
    assert [bench.score_item(i, p) for i, p in zip(items, preds)] == [1.0, 0.0, 1.0, 0.0]
    assert bench.summarize(items, preds) == {"gqa": 50.0}
    # the official script's breakdown by question type, for the items that carry one
    items[0].meta.update(structural="verify", semantic="attr")
    items[2].meta.update(structural="choose", semantic="rel")
    items[3].meta.update(structural="query", semantic="attr")
    assert bench.summarize(items, preds) == {
        "gqa": 50.0, "gqa/structural/choose": 100.0, "gqa/structural/query": 0.0, "gqa/structural/verify": 100.0,
        "gqa/semantic/attr": 50.0, "gqa/semantic/rel": 100.0}


# ---- POPE ----
@pytest.mark.parametrize("text,parsed", [
    ("Yes, there is a dog.", "yes"), ("No.", "no"), ("There is not a dog in the image.", "no"),
    ("yes", "yes"), ("no, there isn't", "no"), ("No. Yes there is.", "no"),
    ("Yes. There is no cat though.", "yes"),  # only the first sentence counts
])
def test_pope_answer_parsing(text, parsed):
    assert parse_yes_no(text) == parsed


def test_pope_metrics_by_hand():
    bench = get_benchmark("pope")
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    preds = ["Yes, there is a dog.", "No.", "There is not a dog.", "Yes", "no, there isn't", "No"]
    items = [item(f"random/{i}", g, split="random") for i, g in enumerate(labels)]
    # parsed: yes no no yes no no -> TP=1 FN=2 FP=1 TN=2
    out = bench.summarize(items, preds)
    assert out["pope/random/precision"] == pytest.approx(50.0)
    assert out["pope/random/recall"] == pytest.approx(100 / 3)
    assert out["pope/random/f1"] == pytest.approx(40.0)  # 2 * 1/2 * 1/3 / (1/2 + 1/3)
    assert out["pope/random/accuracy"] == pytest.approx(50.0)
    assert out["pope/random/yes_ratio"] == pytest.approx(100 / 3)
    assert out["pope"] == pytest.approx(40.0)
    # a second split: all right -> F1 100; headline = mean F1 over splits
    items2 = items + [item("popular/0", "yes", split="popular"), item("popular/1", "no", split="popular")]
    out2 = bench.summarize(items2, preds + ["yes", "no"])
    assert out2["pope/popular/f1"] == 100.0 and out2["pope"] == pytest.approx(70.0)


# ---- MME ----
def test_mme_acc_plus_pairs():
    bench = get_benchmark("mme")
    def mk(task, img, n, ans):
        return EvalItem(qid=f"{task}/{img}/{n}", image="x", prompt="q", answer=ans,
                        meta={"task": task, "image_id": img})
    items = [mk("existence", "a", 1, "yes"), mk("existence", "a", 2, "no"),
             mk("existence", "b", 1, "yes"), mk("existence", "b", 2, "no"),
             mk("count", "c", 1, "no"), mk("count", "c", 2, "yes"),
             mk("code_reasoning", "d", 1, "yes"), mk("code_reasoning", "d", 2, "no")]
    preds = ["Yes", "No.", "Yes, it is", "yes", "No", "I don't know", "yes", "no"]
    out = bench.summarize(items, preds)
    assert out["mme/existence/acc"] == 75.0 and out["mme/existence/acc_plus"] == 50.0
    assert out["mme/existence"] == 125.0
    assert out["mme/count"] == 50.0  # acc 50, acc+ 0 ("I don't know" parses as other)
    assert out["mme/perception"] == 175.0 and out["mme"] == 175.0
    assert out["mme/cognition"] == 200.0


# ---- ScienceQA-IMG ----
@pytest.mark.parametrize("pred,idx", [
    ("B", 1), ("(B)", 1), ("B.", 1), ("B) dog", 1), ("The answer is B.", 1), ("the answer is (C)", 2),
    ("dog", 1), ("Dog.", 1), ("I think it is a bird.", 2), ("A cat", 0), ("E", None), ("nothing", None),
    ("I would pick (B) here", 1), ("The answer is Blue", None), ("b", 1), ("(c)", 2), ("a", 0),
    ("a dog", 1),
])
def test_scienceqa_option_parsing(pred, idx):
    assert parse_choice(pred, ["cat", "dog", "bird"]) == idx


def test_scienceqa_summary():
    bench = get_benchmark("scienceqa_img")
    items = [item("1", "B", options=["cat", "dog"]), item("2", "A", options=["red", "dark red"])]
    # "dark red" names option B only ("red" is part of it), so item 2 is wrong
    assert bench.summarize(items, ["The answer is B", "dark red"]) == {"scienceqa_img": 50.0}


# ---- OCRBench ----
def test_ocrbench_containment_rules():
    assert ocrbench_match("The sign says HELLO world!", ["Hello World"], "IIIT5K")
    assert not ocrbench_match("hello", ["Hello World"], "IIIT5K")
    assert ocrbench_match("abc", ["ABC", "xyz"], "ST")
    assert ocrbench_match(r"\frac{1}{2}", [r"\frac { 1 } { 2 }"], "HME100k")  # whitespace removed
    assert not ocrbench_match("x^2", ["X^2"], "HME100k")  # formulas keep case
    bench = get_benchmark("ocrbench")
    items = [item("1", ["cat"], dataset_name="IIIT5K", type="Regular Text Recognition"),
             item("2", ["dog"], dataset_name="IIIT5K", type="Regular Text Recognition"),
             item("3", ["4"], dataset_name="DocVQA", type="Doc-oriented VQA"),
             item("4", ["a+b"], dataset_name="HME100k", type="Handwritten Mathematical Expression Recognition")]
    out = bench.summarize(items, ["CAT", "cow", "it is 4", "a + b"])
    assert out["ocrbench/count"] == 3 and out["ocrbench"] == 750.0  # 3 of 4 on the 1000 scale
    assert out["ocrbench/Regular Text Recognition"] == 1


# ---- MMMU ----
def test_mmmu_multiple_choice_parsing():
    letters, opts = list("ABCD"), ["12", "15", "20", "25"]
    idx = dict(zip(letters, opts))
    assert parse_multi_choice("(B)", letters, idx) == "B"
    assert parse_multi_choice("The answer is C.", letters, idx) == "C"
    assert parse_multi_choice("B or C, I'd say C", letters, idx) == "C"  # the last one named wins
    assert parse_multi_choice("I believe the total comes to 15 in the end", letters, idx) == "B"
    guess = parse_multi_choice("no idea", letters, idx, seed_key="q1")
    assert guess in letters and guess == parse_multi_choice("no idea", letters, idx, seed_key="q1")


def test_mmmu_open_numbers_and_text():
    assert eval_open("3.5", parse_open("The answer is 3.50"))
    assert eval_open("1000", parse_open("1,000"))
    assert eval_open("paris", parse_open("It is Paris."))
    assert eval_open(["24/7", "3.429"], parse_open("so about 3.429"))
    assert not eval_open("7", parse_open("8"))
    assert not eval_open("a", parse_open("banana"))  # one-letter answers match as words only
    bench = get_benchmark("mmmu")
    items = [item("v1", "B", type="multiple-choice", options=["x", "y"]), item("v2", "7", type="open", options=[])]
    assert bench.summarize(items, ["(B)", "seven"]) == {"mmmu": 50.0}
