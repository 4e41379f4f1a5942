"""Drawing primitives for synthetic scenes. Scenes are drawn on a canvas of at least 256 px and
downscaled (LANCZOS) so that text stays legible at 64 px."""
from __future__ import annotations

import math
import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

MIN_CANVAS = 256

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 225),
    "yellow": (235, 200, 10),
    "purple": (140, 40, 175),
    "orange": (245, 125, 0),
}
SHAPES = ("circle", "square", "triangle", "star")


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


class Canvas:
    """A light background to draw on; `finish()` returns the image at the requested size."""

    def __init__(self, rng: random.Random, image_size: int):
        self.image_size = image_size
        self.size = max(MIN_CANVAS, image_size)
        grey = rng.randint(228, 255)
        self.image = Image.new("RGB", (self.size, self.size), (grey, grey, grey))
        self.draw = ImageDraw.Draw(self.image)

    def px(self, frac: float) -> float:
        return frac * self.size

    def finish(self) -> Image.Image:
        if self.size == self.image_size:
            return self.image
        return self.image.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)


def jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int = 12) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def draw_shape(cv: Canvas, shape: str, cx: float, cy: float, *, r: float, fill: tuple[int, int, int]) -> None:
    """A shape centred at (cx, cy) with 'radius' r, all in canvas pixels."""
    d = cv.draw
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = r * 0.85
        d.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r * 0.97, cy + r * 0.8), (cx + r * 0.97, cy + r * 0.8)], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.42
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        d.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def draw_text(cv: Canvas, text: str, cx: float, cy: float, *, size: float, fill: tuple[int, int, int]) -> None:
    cv.draw.text((cx, cy), text, font=font(max(8, int(size))), fill=fill, anchor="mm")


def dark_ink(rng: random.Random) -> tuple[int, int, int]:
    v = rng.randint(0, 50)
    return (v, v, v)


def grid_cells(rng: random.Random, n: int, cols: int, rows: int) -> list[tuple[int, int]]:
    """n distinct (col, row) cells of a cols x rows grid, in random order."""
    cells = [(c, r) for r in range(rows) for c in range(cols)]
    rng.shuffle(cells)
    return cells[:n]


def draw_table(cv: Canvas, values: list[list[int]], ink: tuple[int, int, int]) -> None:
    rows, cols = len(values), len(values[0])
    m = cv.px(0.06)
    w, h = (cv.size - 2 * m) / cols, (cv.size - 2 * m) / rows
    line = max(2, int(cv.px(0.012)))
    for r in range(rows + 1):
        cv.draw.line((m, m + r * h, cv.size - m, m + r * h), fill=ink, width=line)
    for c in range(cols + 1):
        cv.draw.line((m + c * w, m, m + c * w, cv.size - m), fill=ink, width=line)
    size = min(w, h) * 0.7
    for r in range(rows):
        for c in range(cols):
            draw_text(cv, str(values[r][c]), m + (c + 0.5) * w, m + (r + 0.5) * h, size=size, fill=ink)


def draw_bars(cv: Canvas, heights: list[float], colours: list[tuple[int, int, int]], ink) -> None:
    """Bars left to right; heights are fractions of the plot height."""
    m = cv.px(0.08)
    base = cv.size - m
    top = m
    n = len(heights)
    slot = (cv.size - 2 * m) / n
    line = max(2, int(cv.px(0.012)))
    for i, (hgt, col) in enumerate(zip(heights, colours)):
        x0 = m + i * slot + slot * 0.15
        cv.draw.rectangle((x0, base - hgt * (base - top), x0 + slot * 0.7, base), fill=col)
    cv.draw.line((m, base, cv.size - m, base), fill=ink, width=line)
    cv.draw.line((m, top, m, base), fill=ink, width=line)
