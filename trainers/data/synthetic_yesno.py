"""Yes/no questions about a synthetic scene in MME's and POPE's phrasing (existence, count, colour),
and the SFT mixture that teaches them. A question is derived from an item's caption, so the same
rule writes the SFT items and the synthetic MME pairs; half the SFT questions are answered yes."""
from __future__ import annotations

import random
from collections.abc import Callable

from trainers.data.errors import DataError
from trainers.data.prompts import short_answer_question
from trainers.data.synthetic_draw import COLOURS, SHAPES
from trainers.data.synthetic_kinds import COUNTS, KINDS, SyntheticItem, make_item


def _present_shapes(item: SyntheticItem) -> list[str]:
    words = item.caption.replace(",", " ").split()
    return [s for s in SHAPES if s in words or s + "s" in words]


def exists_question(item: SyntheticItem, yes: bool, rng: random.Random) -> str:
    """MME existence (the "exists" kind asks it of its own scene): a shape drawn there or not."""
    present = _present_shapes(item)
    pool = present if yes else [s for s in SHAPES if s not in present]
    if not pool:
        raise DataError(f"synthetic yes/no: caption {item.caption!r} leaves no {'present' if yes else 'absent'} shape")
    return f"Is there a {rng.choice(pool)} in the image?"


def count_question(item: SyntheticItem, yes: bool, rng: random.Random) -> str:
    """MME count, on a count scene (caption "<n> <colour> <shapes>"): the true count or another."""
    words = item.caption.split()
    n, shape = words[0], words[-1].removesuffix("s")
    k = n if yes else rng.choice([c for c in COUNTS if c != n])
    return f"Are there {k} {shape}s in the image?"


def colour_question(item: SyntheticItem, yes: bool, rng: random.Random) -> str:
    """MME color, on a one-shape scene (caption "a <colour> <shape>"): its colour or another."""
    colour, shape = item.caption.split()[-2:]
    c = colour if yes else rng.choice([k for k in COLOURS if k != colour])
    return f"Is there a {c} {shape} in the image?"


# yes/no kind -> (the scene kind it asks about, the question rule)
YES_NO_KINDS: dict[str, tuple[str, Callable[[SyntheticItem, bool, random.Random], str]]] = {
    "count_yn": ("count", count_question),
    "colour_yn": ("colour", colour_question),
}
SFT_KINDS = (*KINDS, *YES_NO_KINDS)

# One cycle of the SFT and held-out records: the open kinds the benchmarks ask (colour, shape, count,
# reading) twice, existence in both phrasings, and multiple choice (ScienceQA, MMMU) twice. Colour
# once a cycle left the tiny LLM answering two or three colours for every shape in about half the
# trials (GQA colour 17% against 97% in the others, swinging the objective by ~50 points).
SFT_MIX = ("colour", "colour", "shape", "shape", "count", "count", "word", "word", "number", "number", "cell",
           "exists", "exists", "count_yn", "colour_yn", "choice", "choice")


def make_sft_item(rng: random.Random, kind: str, image_size: int) -> SyntheticItem:
    """An item of a scene kind (make_item) or of a yes/no kind: the scene of its base kind, asked
    about with a yes/no question whose answer is drawn first (yes or no, even odds)."""
    if kind not in YES_NO_KINDS:
        return make_item(rng, kind, image_size)
    base, rule = YES_NO_KINDS[kind]
    yes = rng.random() < 0.5
    item = make_item(rng, base, image_size)
    question = short_answer_question(rule(item, yes, rng))  # the prompt the MME and POPE loaders build
    return SyntheticItem(item.image, question, "yes" if yes else "no", kind, None, item.caption)
