"""The six synthetic vision skills, one per tiny expert family (after the paper's categories), each a
small labelled image set and a head on the expert's tokens [B, N, D]:

    caption   A  image-text matching: contrastive, image tokens vs a bag of the caption's words
    classify  B  colour (6) and shape (4) of a single shape
    mask      C  per-pixel foreground mask (16x16) of scattered shapes, one 4x4 block per token
    rotation  D  self-supervised: which of four quarter turns was applied (to text-free scenes whose
                 rotations all differ; each training batch turns them again, the label follows)
    read      E  the word or number written in the image (22 classes)
    count     F  how many shapes (1-6) lie freely placed in the scene (regression, 1 output)

Scenes come from trainers.data.synthetic_kinds (the same drawing as the SFT data and benchmarks),
except count's free layout, drawn here with the same primitives.
`metric` is each task's score in [0, 1] (higher is better) on held-out items."""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from trainers.data.images import to_uint8
from trainers.data.synthetic_draw import COLOURS, SHAPES, Canvas, draw_shape, jitter
from trainers.data.synthetic_kinds import KINDS, NUMBERS, WORDS, make_item
from trainers.spec import SkillName

SKILLS: tuple[str, ...] = get_args(SkillName)
FAMILY_SKILL = {"clip": "caption", "convnext": "classify", "sam": "mask", "dinov2": "rotation",
                "pix2struct": "read", "eva02": "count"}
READ_CLASSES = WORDS + NUMBERS
MASK_SIDE = 16
MAX_CAPTION_WORDS = 16
MAX_COUNT = 6
_COLOURS = tuple(COLOURS)


@dataclass
class SkillData:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    target: torch.Tensor  # per task: class ids, counts, masks or caption word ids


@lru_cache(maxsize=1)
def _caption_vocab() -> dict[str, int]:
    words = sorted({w for k in KINDS for w in _probe_captions(k)} | set(READ_CLASSES) | set(_COLOURS) | set(SHAPES))
    return {w: i + 1 for i, w in enumerate(words)}  # 0 pads


def _probe_captions(kind: str) -> set[str]:
    rng = random.Random(f"eagle-skill-vocab:{kind}")
    return {w for _ in range(48) for w in _words(make_item(rng, kind, 16).caption)}


def _words(caption: str) -> list[str]:
    return caption.replace(",", " ").replace(";", " ").replace(":", " ").split()


def _free_scene(rng: random.Random, image_size: int) -> tuple[torch.Tensor, int]:
    """1-6 shapes of any colour at free, non-overlapping places and sizes: the count is not the number
    of occupied quadrants (as in the 2x2 scatter scenes), so it needs a real counter."""
    n = rng.randint(1, MAX_COUNT)
    cv = Canvas(rng, image_size)
    placed: list[tuple[float, float, float]] = []
    while len(placed) < n:
        r = cv.px(rng.uniform(0.07, 0.13))
        x, y = rng.uniform(r, cv.size - r), rng.uniform(r, cv.size - r)
        if all((x - a) ** 2 + (y - b) ** 2 > (r + c + cv.px(0.02)) ** 2 for a, b, c in placed):
            placed.append((x, y, r))
            draw_shape(cv, rng.choice(SHAPES), x, y, r=r, fill=jitter(rng, COLOURS[rng.choice(_COLOURS)]))
    return to_uint8(cv.finish(), image_size), n


def _oriented_scene(rng: random.Random, image_size: int):
    """A scene whose four rotations all look different and that holds no text (reading is E's skill):
    a triangle or a star (circles and squares look alike rotated) or a bar chart."""
    while True:
        item = make_item(rng, rng.choice(("colour", "choice")), image_size)
        if item.caption.startswith("a bar chart") or item.caption.split()[-1] in ("triangle", "star"):
            return item


def _foreground(img: torch.Tensor) -> torch.Tensor:
    """16x16 mask of the coloured (saturated) pixels: backgrounds are grey, shapes saturated."""
    x = img.float()
    sat = (x.max(0).values - x.min(0).values) > 60
    return (F.adaptive_avg_pool2d(sat[None, None].float(), MASK_SIDE)[0, 0] > 0.5).float()


def make_data(skill: str, n: int, seed: int, image_size: int, split: str) -> SkillData:
    """n labelled images of `skill`, fully determined by (skill, seed, split)."""
    rng = random.Random(f"eagle-skill:{skill}:{split}:{seed}")
    vocab = _caption_vocab() if skill == "caption" else {}
    images, targets = [], []
    for i in range(n):
        if skill == "caption":
            item = make_item(rng, rng.choice(tuple(KINDS)), image_size)
            ids = [vocab.get(w, 0) for w in _words(item.caption)][:MAX_CAPTION_WORDS]
            targets.append(ids + [0] * (MAX_CAPTION_WORDS - len(ids)))
        elif skill == "classify":
            item = make_item(rng, "colour", image_size)
            colour, shape = _words(item.caption)[-2:]
            targets.append([_COLOURS.index(colour), SHAPES.index(shape)])
        elif skill == "mask":
            item = make_item(rng, rng.choice(("exists", "count")), image_size)
        elif skill == "rotation":
            item = _oriented_scene(rng, image_size)
            targets.append(i % 4)
        elif skill == "read":
            item = make_item(rng, rng.choice(("word", "number")), image_size)
            targets.append(READ_CLASSES.index(item.answer))
        elif skill == "count":
            img, n_objects = _free_scene(rng, image_size)
            targets.append([float(n_objects)])
        else:
            raise ValueError(f"unknown skill {skill!r}; known: {', '.join(SKILLS)}")
        img = img if skill == "count" else to_uint8(item.image, image_size)
        if skill == "rotation":
            img = torch.rot90(img, i % 4, dims=(1, 2))
        if skill == "mask":
            targets.append(_foreground(img))
        images.append(img)
    target = torch.stack(targets) if skill == "mask" else torch.tensor(targets)
    return SkillData(torch.stack(images), target)


def augment(skill: str, images: torch.Tensor, target: torch.Tensor, gen: torch.Generator):
    """A training batch made fresh: rotation items turned by a further random quarter turn (the label
    follows), so the expert cannot learn its training scenes by heart. Other skills unchanged."""
    if skill != "rotation":
        return images, target
    turns = torch.randint(0, 4, (len(images),), generator=gen)
    out = torch.stack([torch.rot90(img, int(k), dims=(1, 2)) for img, k in zip(images, turns)])
    return out, (target + turns) % 4


class SkillHead(nn.Module):
    """The task's head on expert tokens [B, N, D]: a linear map of the normalised tokens."""

    def __init__(self, skill: str, tokens: int, width: int) -> None:
        super().__init__()
        self.skill = skill
        self.norm = nn.LayerNorm(width)
        flat = tokens * width
        if skill == "caption":
            self.out = nn.Linear(flat, 32)
            self.text = nn.EmbeddingBag(len(_caption_vocab()) + 1, 32, mode="mean", padding_idx=0)
        elif skill == "mask":
            self.out = nn.Linear(width, (MASK_SIDE * MASK_SIDE) // tokens)
        else:
            outs = {"classify": len(_COLOURS) + len(SHAPES), "rotation": 4, "read": len(READ_CLASSES),
                    "count": 1}[skill]
            self.out = nn.Linear(flat, outs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        if self.skill == "mask":  # token (r, c) predicts its block of the mask
            b, n, _ = x.shape
            g, side = int(n ** 0.5), MASK_SIDE // int(n ** 0.5)
            blocks = self.out(x).view(b, g, g, side, side)
            return blocks.permute(0, 1, 3, 2, 4).reshape(b, MASK_SIDE, MASK_SIDE)
        return self.out(x.flatten(1))

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.skill == "caption":
            img = F.normalize(pred, dim=-1)
            txt = F.normalize(self.text(target), dim=-1)
            logits = img @ txt.T / 0.1
            labels = torch.arange(len(img))
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        if self.skill == "classify":
            k = len(_COLOURS)
            return F.cross_entropy(pred[:, :k], target[:, 0]) + F.cross_entropy(pred[:, k:], target[:, 1])
        if self.skill == "mask":
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.skill == "count":
            return F.smooth_l1_loss(pred, target.float())
        return F.cross_entropy(pred, target)

    @torch.no_grad()
    def metric(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        """Accuracy in [0, 1]: retrieval top-1 in the batch (caption), mean of colour and shape
        accuracy, pixel IoU (mask), exact per-shape counts (count), class accuracy otherwise."""
        if self.skill == "caption":
            img = F.normalize(pred, dim=-1)
            txt = F.normalize(self.text(target), dim=-1)
            return ((img @ txt.T).argmax(1) == torch.arange(len(img))).float().mean().item()
        if self.skill == "classify":
            k = len(_COLOURS)
            return ((pred[:, :k].argmax(1) == target[:, 0]).float().mean().item()
                    + (pred[:, k:].argmax(1) == target[:, 1]).float().mean().item()) / 2
        if self.skill == "mask":
            hit = pred > 0
            inter = (hit & (target > 0.5)).sum().item()
            union = (hit | (target > 0.5)).sum().item()
            return inter / union if union else 1.0
        if self.skill == "count":
            return (pred.round() == target).all(1).float().mean().item()
        return (pred.argmax(1) == target).float().mean().item()
