"""Answer normalisation of the official VQA evaluation, as LLaVA-1.5 runs it for TextVQA
(llava/eval/m4c_evaluator.py, the EvalAI answer processor of mmf); lmms-eval's
tasks/_task_utils/vqa_eval_metric.py is the same processor, so both profiles share this file.

Steps, in the official order: lower-case, drop "," and "?", split "'s" off ("man's" -> "man 's"),
strip; newlines/tabs to spaces; each listed punctuation mark removed when it touches a space
somewhere in the text, else replaced by a space; periods not followed by a digit dropped (at most
32: the official call passes re.UNICODE where `count` goes); number words -> digits; articles
dropped; contractions restored by the official table, quirks included (see _contraction_map)."""
from __future__ import annotations

import re

# '.' is handled by _PERIOD_STRIP so "1.5" survives. The official comma-between-digits test that
# also forces removal never fires: word_tokenize has already dropped every comma.
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!"]
# As written officially: "(?!<=\d)" is a look-ahead for the text "<=digit", not a look-behind, so
# a period before a digit survives and one after a digit ("3.") does not.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # 32: the official sub(..., re.UNICODE) is a count
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}

# Canonical forms; the official keys are these with one apostrophe dropped ("dont" -> "don't",
# "couldnt've" -> "couldn't've"), generated below.
_CONTRACTION_FORMS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've
might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've
shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll
someone's something'd something'd've something'll that's there'd there'd've there're there's
they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's
what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's
won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contraction_map() -> dict[str, str]:
    """The official table as it acts on lower-cased words. Its I-forms are keyed capitalised ("Im",
    "Ive", "Id've", "I'dve") and so never fire: "im" and "ive" stay as they are. It has no "lets"
    or "shes" key (only no-op "let's"/"she's" entries), and its one "somebody'd" entry runs
    backwards, to "somebodyd"."""
    out: dict[str, str] = {}
    for form in _CONTRACTION_FORMS:
        for pos in (i for i, ch in enumerate(form) if ch == "'"):
            out[form[:pos] + form[pos + 1:]] = form
    out["somebody'd"] = "somebodyd"
    return out


CONTRACTIONS = _contraction_map()


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        # "a - b": the mark is dropped everywhere; "red-white": it becomes a space.
        out = out.replace(p, "" if (p + " " in text or " " + p in text) else " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """The VQA accuracy of one prediction against (usually 10) human answers: for each leave-one-out
    subset of the answers, min(#matches / 3, 1); averaged over the subsets."""
    if not gt_answers:
        raise ValueError("VQA accuracy needs at least one ground-truth answer")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in gt_answers]
    accs = []
    for left_out in range(len(gts)):
        matches = sum(1 for j, g in enumerate(gts) if j != left_out and g == pred)
        accs.append(min(matches / 3.0, 1.0))
    return sum(accs) / len(accs)
