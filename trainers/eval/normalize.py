"""Answer normalisation of the official VQA evaluation (as used for TextVQA by LLaVA-1.5 through the
EvalAI answer processor): lower-case, drop "," and "?", split "'s", strip/space punctuation, drop
periods not inside numbers, number words -> digits, drop articles, restore contractions."""
from __future__ import annotations

import re

# Punctuation the VQA evaluator removes ('.' is handled by _PERIOD_STRIP so "1.5" survives).
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}

# The canonical forms of the VQA contraction map; its keys are these with one apostrophe dropped
# ("dont" -> "don't", "couldnt've" -> "couldn't've"), generated below.
_CONTRACTION_FORMS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll let's ma'am
mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd've she's
should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd
someone'd've someone'll someone's something'd something'd've something'll that's there'd
there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've
weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's
who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd
you'd've you'll you're you've
""".split()


def _contraction_map() -> dict[str, str]:
    out: dict[str, str] = {}
    for form in _CONTRACTION_FORMS:
        positions = [i for i, ch in enumerate(form) if ch == "'"]
        for pos in positions:
            out[form[:pos] + form[pos + 1:]] = form
    return out


CONTRACTIONS = _contraction_map()


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        # "a - b" or "1,000": the mark is dropped; "red-white": it becomes a space.
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


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
