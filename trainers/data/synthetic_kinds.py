"""Synthetic question kinds. Answers come from small closed sets (ANSWER_SETS) and always need
the image: the question never names the answer, and the scene is drawn from the answer."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from trainers.data.errors import DataError, UnknownNameError
from trainers.data.prompts import (
    OPTION_LETTERS,
    multiple_choice_question,
    short_answer_question,
)
from trainers.data.synthetic_draw import (
    COLOURS,
    SHAPES,
    Canvas,
    dark_ink,
    draw_bars,
    draw_shape,
    draw_table,
    draw_text,
    grid_cells,
    jitter,
)

WORDS = ("cat", "dog", "sun", "car", "tree", "fish", "book", "moon", "bird", "ship", "cake", "lamp")
NUMBERS = tuple(str(i) for i in range(10))
COUNTS = ("1", "2", "3", "4")
N_OPTIONS = 4
MIN_IMAGE_SIZE = 16

ANSWER_SETS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "count": COUNTS,
    "word": WORDS,
    "number": NUMBERS,
    "cell": NUMBERS,
    "exists": ("yes", "no"),
    "choice": tuple(OPTION_LETTERS[:N_OPTIONS]),
}


@dataclass
class SyntheticItem:
    image: Image.Image
    question: str  # with its LLaVA-1.5 answer-format suffix (and options for "choice")
    answer: str
    kind: str
    options: list[str] | None
    caption: str


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _one_shape(rng: random.Random, cv: Canvas, shape: str, colour: str) -> None:
    r = cv.px(rng.uniform(0.2, 0.32))
    cx = rng.uniform(r, cv.size - r)
    cy = rng.uniform(r, cv.size - r)
    draw_shape(cv, shape, cx, cy, r=r, fill=jitter(rng, COLOURS[colour]))


def _colour(rng: random.Random, image_size: int) -> SyntheticItem:
    colour, shape = rng.choice(tuple(COLOURS)), rng.choice(SHAPES)
    cv = Canvas(rng, image_size)
    _one_shape(rng, cv, shape, colour)
    q = short_answer_question("What is the colour of the shape?")
    return SyntheticItem(cv.finish(), q, colour, "colour", None, _a(f"{colour} {shape}"))


def _shape(rng: random.Random, image_size: int) -> SyntheticItem:
    colour, shape = rng.choice(tuple(COLOURS)), rng.choice(SHAPES)
    cv = Canvas(rng, image_size)
    _one_shape(rng, cv, shape, colour)
    q = short_answer_question("What shape is shown in the image?")
    return SyntheticItem(cv.finish(), q, shape, "shape", None, _a(f"{colour} {shape}"))


def _scatter(rng: random.Random, cv: Canvas, objects: list[tuple[str, str]]) -> None:
    """Objects (shape, colour) in distinct cells of a 2x2 grid, jittered inside their cell."""
    cell = cv.size / 2
    for (shape, colour), (c, r) in zip(objects, grid_cells(rng, len(objects), 2, 2)):
        rad = cell * rng.uniform(0.28, 0.36)
        cx = c * cell + rng.uniform(rad, cell - rad)
        cy = r * cell + rng.uniform(rad, cell - rad)
        draw_shape(cv, shape, cx, cy, r=rad, fill=jitter(rng, COLOURS[colour]))


def _count(rng: random.Random, image_size: int) -> SyntheticItem:
    n = int(rng.choice(COUNTS))
    colour, shape = rng.choice(tuple(COLOURS)), rng.choice(SHAPES)
    cv = Canvas(rng, image_size)
    _scatter(rng, cv, [(shape, colour)] * n)
    q = short_answer_question(f"How many {shape}s are there in the image?")
    return SyntheticItem(cv.finish(), q, str(n), "count", None, f"{n} {colour} {_plural(shape, n)}")


def _written(rng: random.Random, image_size: int, kind: str, choices, *, size: tuple[float, float],
             x: tuple[float, float], y: tuple[float, float]) -> SyntheticItem:
    """One word or number written large at a random place: the answer is what is written."""
    text = rng.choice(choices)
    cv = Canvas(rng, image_size)
    px = cv.px(rng.uniform(*size))
    draw_text(cv, text, cv.px(rng.uniform(*x)), cv.px(rng.uniform(*y)), size=px, fill=dark_ink(rng))
    q = short_answer_question(f"What {kind} is written in the image?")
    return SyntheticItem(cv.finish(), q, text, kind, None, f"the {kind} {text}")


def _word(rng: random.Random, image_size: int) -> SyntheticItem:
    return _written(rng, image_size, "word", WORDS, size=(0.3, 0.36), x=(0.42, 0.58), y=(0.3, 0.7))


def _number(rng: random.Random, image_size: int) -> SyntheticItem:
    return _written(rng, image_size, "number", NUMBERS, size=(0.45, 0.6), x=(0.3, 0.7), y=(0.35, 0.65))


def _cell(rng: random.Random, image_size: int) -> SyntheticItem:
    rows, cols = 2, rng.choice((2, 3))
    values = [[rng.randrange(10) for _ in range(cols)] for _ in range(rows)]
    r, c = rng.randrange(rows), rng.randrange(cols)
    cv = Canvas(rng, image_size)
    draw_table(cv, values, dark_ink(rng))
    q = short_answer_question(f"What number is in row {r + 1}, column {c + 1} of the table?")
    flat = " ".join(" ".join(str(v) for v in row) for row in values)
    cap = f"a table of numbers with {rows} rows and {cols} columns: {flat}"
    return SyntheticItem(cv.finish(), q, str(values[r][c]), "cell", None, cap)


def _exists(rng: random.Random, image_size: int) -> SyntheticItem:
    target = rng.choice(SHAPES)
    present = rng.random() < 0.5
    others = [s for s in SHAPES if s != target]
    n = rng.randint(1, 3)
    shapes = [rng.choice(others) for _ in range(n)]
    if present:
        shapes[rng.randrange(n)] = target
    objects = [(s, rng.choice(tuple(COLOURS))) for s in shapes]
    cv = Canvas(rng, image_size)
    _scatter(rng, cv, objects)
    q = short_answer_question(f"Is there a {target} in the image?")  # LLaVA-1.5 POPE/MME prompt
    cap = " and ".join(_a(f"{colour} {shape}") for shape, colour in objects)
    return SyntheticItem(cv.finish(), q, "yes" if present else "no", "exists", None, cap)


def _choice(rng: random.Random, image_size: int) -> SyntheticItem:
    """Multiple choice over the other skills: the tallest bar's colour, a shape, a count, a word."""
    cv = Canvas(rng, image_size)
    variant = rng.randrange(4)
    if variant == 0:  # bar chart: which colour is the tallest bar
        n = rng.randint(3, 4)
        names = rng.sample(tuple(COLOURS), n)
        heights = [0.2 + 0.7 * (k + 1) / n for k in range(n)]
        rng.shuffle(heights)
        draw_bars(cv, heights, [jitter(rng, COLOURS[c]) for c in names], dark_ink(rng))
        correct = names[heights.index(max(heights))]
        pool = names + rng.sample([c for c in COLOURS if c not in names], N_OPTIONS - n)
        question = "Which colour is the tallest bar?"
        cap = "a bar chart with " + ", ".join(_a(f"{c} bar") for c in names) + f"; the {correct} bar is the tallest"
    elif variant == 1:
        colour, correct = rng.choice(tuple(COLOURS)), rng.choice(SHAPES)
        _one_shape(rng, cv, correct, colour)
        pool = list(SHAPES)
        question = "What shape is shown in the image?"
        cap = _a(f"{colour} {correct}")
    elif variant == 2:
        n, colour, shape = int(rng.choice(COUNTS)), rng.choice(tuple(COLOURS)), rng.choice(SHAPES)
        _scatter(rng, cv, [(shape, colour)] * n)
        correct, pool = str(n), list(COUNTS)
        question = f"How many {shape}s are there in the image?"
        cap = f"{n} {colour} {_plural(shape, n)}"
    else:
        correct = rng.choice(WORDS)
        draw_text(cv, correct, cv.px(rng.uniform(0.42, 0.58)), cv.px(rng.uniform(0.3, 0.7)),
                  size=cv.px(rng.uniform(0.3, 0.36)), fill=dark_ink(rng))
        pool = [correct] + rng.sample([w for w in WORDS if w != correct], N_OPTIONS - 1)
        question = "Which word is written in the image?"
        cap = f"the word {correct}"
    options = rng.sample(pool, N_OPTIONS)
    answer = OPTION_LETTERS[options.index(correct)]
    return SyntheticItem(cv.finish(), multiple_choice_question(question, options), answer, "choice", options, cap)


KINDS: dict[str, Callable[[random.Random, int], SyntheticItem]] = {
    "colour": _colour,
    "shape": _shape,
    "count": _count,
    "word": _word,
    "number": _number,
    "cell": _cell,
    "exists": _exists,
    "choice": _choice,
}


def make_item(rng: random.Random, kind: str, image_size: int) -> SyntheticItem:
    """One synthetic scene + question of `kind`, fully determined by the state of `rng`."""
    if kind not in KINDS:
        raise UnknownNameError("synthetic kind", kind, KINDS)
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise DataError(f"synthetic image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    return KINDS[kind](rng, image_size)
