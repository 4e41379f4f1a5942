"""Every scorer rule, in both profiles, against fixtures taken from the scripts' own behaviour.

Each expected value below is what the named script returns on that input (run on the scripts as
published: LLaVA's llava/eval/{m4c_evaluator,eval_pope,eval_science_qa}.py and
scripts/convert_gqa_for_eval.py with GQA's eval.py, MME's eval_tool/calculation.py, MMMU's
mmmu/utils/eval_utils.py, MultimodalOCR's OCRBench/example.py; lmms-eval's tasks/<bench>/utils.py,
_task_utils/mmmu_mcq_utils.py and api/metrics.py exact_match). A column is (official, lmms_eval)."""
import pytest

from trainers.eval.benchmarks.gqa import gqa_match
from trainers.eval.benchmarks.mme import parse_mme_answer
from trainers.eval.benchmarks.mmmu_parse import eval_open, parse_multi_choice, parse_open
from trainers.eval.benchmarks.ocrbench import ocrbench_match
from trainers.eval.benchmarks.pope import parse_yes_no
from trainers.eval.benchmarks.scienceqa_img import parse_choice
from trainers.eval.normalize import normalize_vqa_answer

PROFILES = ("official", "lmms_eval")


# ---- TextVQA: m4c_evaluator's EvalAIAnswerProcessor (lmms-eval's vqa_eval_metric is the same) ----
@pytest.mark.parametrize("raw,norm", [
    ("im", "im"), ("ive", "ive"), ("Im", "im"), ("I'm", "i'm"),  # capitalised keys never fire
    ("lets", "lets"), ("shes", "shes"),  # no such keys (only no-op "let's", "she's")
    ("somebody'd", "somebodyd"), ("somebodyd", "somebodyd"),  # the backwards entry
    ("'ows'at", "'ow's'at"), ("dont", "don't"), ("hadnt've", "hadn't've"),
    ("Two", "2"), ("the dog", "dog"), ("Dog.", "dog"), ("red-white", "red white"), ("a - b", "b"),
    ("1,000", "1000"), ("3.5", "3.5"), ("3.", "3"), ("x.y", "xy"), ("A man's hat!", "man 's hat"),
    ("  None ", "0"),
    ("." * 40, "." * 8),  # re.UNICODE passed as sub()'s count: only 32 periods go
])
def test_vqa_normalisation(raw, norm):
    assert normalize_vqa_answer(raw) == norm


# ---- GQA: convert_gqa_for_eval.py + eval.py | lmms-eval exact_match(ignore_case, ignore_punctuation) ----
@pytest.mark.parametrize("pred,gold,expected", [
    ("Yes.", "yes", (True, True)), ("yes...", "yes", (True, True)), ("LEFT", "left", (True, True)),
    ("yes .", "yes", (False, False)), ("traffic  light", "traffic light", (False, False)),
    ("the dog", "dog", (False, False)), (" left", "left", (False, True)), ("left\n", "left", (False, True)),
    ("Left!", "left", (False, True)), ("tshirt", "t-shirt", (False, True)), ("t-shirt", "t-shirt", (True, True)),
])
def test_gqa_match(pred, gold, expected):
    assert tuple(gqa_match(pred, gold, p) for p in PROFILES) == expected


# ---- POPE: eval_pope.py's parsing | lmms-eval's exact "yes"/"no" ----
@pytest.mark.parametrize("text,official,lmms_yes,lmms_no", [
    ("Yes, there is a dog.", "yes", False, False), ("No.", "no", False, False),
    ("There is not a dog in the image.", "no", False, False), ("no, there isn't", "no", False, False),
    ("No. Yes there is.", "no", False, False), ("Yes. There is no cat though.", "yes", False, False),
    ("NO", "yes", False, True), ("Nope", "yes", False, False), ("No\nthere is none", "yes", False, False),
    (" yes ", "yes", True, False), ("Yes", "yes", True, False), ("no", "no", False, True),
])
def test_pope_answers(text, official, lmms_yes, lmms_no):
    from trainers.eval import get_benchmark
    from trainers.eval.base import EvalItem

    assert parse_yes_no(text) == official
    bench = get_benchmark("pope", "lmms_eval")
    scores = [bench.score_item(EvalItem("random/1", "x", "q", label, {"split": "random"}), text)
              for label in ("yes", "no")]
    assert scores == [float(lmms_yes), float(lmms_no)]


# ---- MME: calculation.py | lmms-eval tasks/mme ----
@pytest.mark.parametrize("text,expected", [
    ("Yes", ("yes", "yes")), ("No.", ("no", "no")), ("Yes, it is", ("yes", "yes")), ("Nope", ("no", "no")),
    ("not sure", ("no", "no")), ("I don't know", ("other", "other")), ("ok", ("other", "other")),
    ("", ("other", "other")), ("yes\tno", ("yes", "yes")),
    (". yes", ("other", "yes")), ("  yes", ("other", "yes")),  # lmms-eval strips and drops periods
    ("y", ("other", "yes")), ("n", ("other", "no")), ("N", ("other", "no")),  # lmms-eval's y/n
])
def test_mme_answers(text, expected):
    assert tuple(parse_mme_answer(text, p) for p in PROFILES) == expected


# ---- ScienceQA-IMG: eval_science_qa.py | lmms-eval tasks/scienceqa (options cat, dog, bird) ----
@pytest.mark.parametrize("pred,expected", [
    ("B", (1, 1)), ("B. dog", (1, 1)), ("b", (None, 1)), ("B.", (None, 1)), ("C.", (None, 2)),
    (" B", (None, 1)), ("B ", (None, 1)), ("A.B", (None, 0)),
    ("The answer is B.", (1, None)), ("The answer is C, because", (2, None)),
    ("The answer is Blue.", (1, None)),  # the official regex's "." is any character
    ("The answer is B", (None, None)),  # ... so it needs one after the letter
    ("The answer is A. The answer is B.", (None, None)),  # two matches: no answer
    ("(B)", (None, None)), ("B) dog", (None, None)), ("the answer is (C)", (None, None)),
    ("E", (None, None)), ("dog", (None, None)),
])
def test_scienceqa_choice(pred, expected):
    assert tuple(parse_choice(pred, 3, p) for p in PROFILES) == expected


# ---- OCRBench: example.py | lmms-eval tasks/ocrbench ----
@pytest.mark.parametrize("pred,answers,dataset,expected", [
    ("The sign says HELLO world!", ["Hello World"], "IIIT5K", (True, True)),
    ("hello", ["Hello World"], "IIIT5K", (False, False)),
    ("one\ntwo", ["one two"], "IIIT5K", (True, True)),
    ("ＨＥＬＬＯ", ["hello"], "IIIT5K", (False, True)),  # lmms-eval folds full-width ASCII
    ("a\u3000b", ["a b"], "IIIT5K", (False, True)),  # ... and the ideographic space
    ("\\frac{1}{2}", ["\\frac { 1 } { 2 }"], "HME100k", (True, True)),
    ("a\n b", ["ab"], "HME100k", (True, True)),  # newlines and spaces go
    ("a\tb", ["ab"], "HME100k", (False, False)),  # other whitespace stays
    ("x^2", ["X^2"], "HME100k", (False, False)),  # formulas keep case
    ("ｘ^２", ["x^2"], "HME100k", (False, False)),  # and are not folded
])
def test_ocrbench_match(pred, answers, dataset, expected):
    assert tuple(ocrbench_match(pred, answers, dataset, p) for p in PROFILES) == expected


# ---- MMMU open answers: eval_utils.py (lmms-eval alike) ----
@pytest.mark.parametrize("response,gold,right,parsed", [
    ("It weighs 5kg", "5", False, {"it weighs 5kg"}),  # a whole number must end a word
    ("the 3rd one", "3", False, {"the 3rd one"}),
    ("5 kg", "5", True, {"5 kg", 5.0}),
    ("The answer is \n42", "42", False, {"is"}),  # empty after "is ": "answer "'s tail replaces it
    ("The answer is \n42", "is", True, {"is"}),
    ("The answer is 3.50", "3.5", True, {3.5}), ("1,000", "1000", True, {1000.0, 0.0}),
    ("It is Paris.", "paris", True, {"paris"}), ("so about 3.429", ["24/7", "3.429"], True, {"about 3.429", 3.43}),
    ("x = 4", "4", True, {4.0}), ("8", "7", False, {8.0}), ("banana", "a", False, {"banana"}),
])
def test_mmmu_open(response, gold, right, parsed):
    assert set(parse_open(response)) == parsed
    assert eval_open(gold, parse_open(response)) is right


# ---- MMMU multiple choice: eval_utils.py | lmms-eval mmmu_mcq_utils.py (options 12, 15, 20, 25) ----
LETTERS, OPTIONS = list("ABCD"), dict(zip("ABCD", ["12", "15", "20", "25"]))


@pytest.mark.parametrize("response,expected", [
    ("(B)", ("B", "B")), ("The answer is C.", ("C", "C")), ("B or C, I'd say C", ("C", "C")),
    ("I think B is right", ("B", "B")), ("I believe the total comes to 15 in the end", ("B", "B")),
    ("NASA is the answer to this question", (None, "A")),  # lmms-eval: "A " with no space before
    ("answer:C.ok", (None, "C")), ("B.C", (None, "C")),  # lmms-eval: "C." and "C " anywhere
])
def test_mmmu_multiple_choice(response, expected):
    official = parse_multi_choice(response, LETTERS, OPTIONS, "q3")
    guess = parse_multi_choice("zzz", LETTERS, OPTIONS, "q3")  # nothing named: a seeded guess (B, not A or C)
    assert official == (expected[0] or guess)
    assert parse_multi_choice(response, LETTERS, OPTIONS, "q3", loose=True) == expected[1]
    assert guess == parse_multi_choice("zzz", LETTERS, OPTIONS, "q3") and guess in LETTERS
