"""MMMU's reference answer parsing (multiple choice, open answers, numbers) and its matching rules.

Follows the MMMU evaluation (MMMU-Benchmark/MMMU mmmu/utils/eval_utils.py:
parse_multi_choice_response, parse_open_response, eval_open), quirks included: the open response
is lower-cased before it is split on ". <Capital>", so only newlines split it; a whole number must
end at a word boundary, so "5kg" and "3rd" yield no number; an empty tail after an indicator
("is " at the end of a line) is replaced by the next indicator's tail, whatever its length.
One departure: a multiple-choice answer naming no option gets a random option from a generator
seeded by the question id, where the official script draws from one global random.seed(42)
stream, so its guess depends on every guess before it.

lmms-eval (tasks/_task_utils/mmmu_mcq_utils.py) looks for letters more loosely (`loose=True`):
after "(B)" it takes "B " (no space needed before it: "NASA " names A) and then "B." anywhere. Its open answers are
scored as here: lmms-eval releases from its PR #724 until PR #1471 passed eval_open one string, whose
characters never match, and so scored every open question wrong."""
from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

_COMMAS = r"-?\b\d{1,3}(?:,\d{3})+\b"
_SCIENTIFIC = r"-?\d+(?:\.\d+)?[eE][+-]?\d+"
_SIMPLE = r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def _strip_response(response: str) -> str:
    for ch in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(ch)
    return f" {response} "


def multi_choice_candidates(response: str, choices: Sequence[str], index2ans: dict[str, str],
                            loose: bool = False) -> tuple[list[str], bool, bool]:
    """(the options an answer names, found by bracket, found by letter); none named: a guess."""
    response = _strip_response(response)
    candidates = [c for c in choices if f"({c})" in response]
    bracketed, by_letter = bool(candidates), True
    for pattern in ("{} ", "{}.") if loose else (" {} ",):
        if not candidates:
            candidates = [c for c in choices if pattern.format(c) in response]
    if not candidates and len(response.split()) > 5:
        candidates = [c for c in choices if index2ans[c].lower() in response.lower()]
        by_letter = False
    return candidates, bracketed, by_letter


def parse_multi_choice(response: str, choices: Sequence[str], index2ans: dict[str, str],
                       seed_key: str = "", loose: bool = False) -> str:
    """The option letter a free-form answer picks (loose: lmms-eval's extra letter passes)."""
    candidates, bracketed, by_letter = multi_choice_candidates(response, choices, index2ans, loose)
    response = _strip_response(response)
    if not candidates:
        rng = random.Random(int.from_bytes(hashlib.sha256(seed_key.encode()).digest()[:8], "big"))
        return rng.choice(list(choices))
    if len(candidates) == 1:
        return candidates[0]
    # Several: the one mentioned last wins (loose finds are still placed by " B ", -1 if absent).
    if by_letter:
        pattern = "({})" if bracketed else " {} "
        positions = [response.rfind(pattern.format(c)) for c in candidates]
    else:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (positions[i], -i))]


def extract_numbers(text: str) -> list[str]:
    return re.findall(_COMMAS, text) + re.findall(_SCIENTIFIC, text) + re.findall(_SIMPLE, text)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_str(text: str) -> list[str | float]:
    """A number becomes a float rounded to 2 places; a one-letter string is padded both ways so it
    only matches as a word."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [f" {text}", f"{text} "] if len(text) == 1 else [text]


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    subs = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for idx, sub in enumerate(subs):
        indicators = _KEY_INDICATORS + (("=",) if idx == len(subs) - 1 else ())
        shortest = ""
        for ind in indicators:
            if ind in sub:
                tail = sub.split(ind)[-1].strip()
                if not shortest or len(tail) < len(shortest):  # an empty tail is replaced
                    shortest = tail
        if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list[str | float]:
    keys = _key_subresponses(response)
    preds: list[str] = list(keys)
    for k in keys:
        preds.extend(extract_numbers(k))
    out: list[str | float] = []
    for p in preds:
        out.extend(normalize_str(p))
    return list(dict.fromkeys(out))


def eval_open(gold: str | Sequence[str], preds: Sequence[str | float]) -> bool:
    golds = [gold] if isinstance(gold, str) else list(gold)
    norm_golds: list[str | float] = []
    for g in golds:
        norm_golds.extend(normalize_str(g))
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in norm_golds):
                return True
        elif pred in norm_golds:
            return True
    return False
