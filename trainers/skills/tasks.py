"""The six synthetic vision skills, one per tiny expert family (after the paper's categories), each a
small labelled image set and a head on the expert's tokens [B, N, D]:

    caption   A  image-text matching: contrastive, image tokens vs a bag of the caption's words
    classify  B  colour (6) and shape (4) of a single shape
    mask      C  per-pixel foreground mask (16x16) of scattered shapes, one 4x4 block per token
    rotation  D  self-supervised: which of four rotations was applied
    read      E  the word or number written in the image (22 classes)
    count     F  how many of each shape are in the scene (regression, 4 outputs)

Scenes come from trainers.data.synthetic_kinds (the same drawing as the SFT data and benchmarks).
`metric` is each task's score in [0, 1] (higher is better) on held-out items."""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from trainers.data.images import to_uint8
from trainers.data.synthetic_draw import COLOURS, SHAPES
from trainers.data.synthetic_kinds import KINDS, NUMBERS, WORDS, make_item

SKILLS = ("caption", "classify", "mask", "rotation", "read", "count")
FAMILY_SKILL = {"clip": "caption", "convnext": "classify", "sam": "mask", "dinov2": "rotation",
                "pix2struct": "read", "eva02": "count"}
READ_CLASSES = WORDS + NUMBERS
MASK_SIDE = 16
MAX_CAPTION_WORDS = 16
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


def _shape_counts(caption: str) -> list[float]:
    """Per-shape counts named by a scatter scene's caption ("3 red circles", "a red circle and ...")."""
    words = _words(caption)
    counts = [0.0] * len(SHAPES)
    if words[0].isdigit():
        counts[SHAPES.index(words[-1].removesuffix("s"))] = float(words[0])
    else:
        for w in words:
            if w in SHAPES:
                counts[SHAPES.index(w)] += 1
    return counts


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
        elif skill == "rotation":  # scenes whose orientation shows (text, tables, charts)
            item = make_item(rng, rng.choice(("word", "number", "cell", "choice")), image_size)
            targets.append(i % 4)
        elif skill == "read":
            item = make_item(rng, rng.choice(("word", "number")), image_size)
            targets.append(READ_CLASSES.index(item.answer))
        elif skill == "count":
            item = make_item(rng, rng.choice(("exists", "count")), image_size)
            targets.append(_shape_counts(item.caption))
        else:
            raise ValueError(f"unknown skill {skill!r}; known: {', '.join(SKILLS)}")
        img = to_uint8(item.image, image_size)
        if skill == "rotation":
            img = torch.rot90(img, i % 4, dims=(1, 2))
        if skill == "mask":
            targets.append(_foreground(img))
        images.append(img)
    target = torch.stack(targets) if skill == "mask" else torch.tensor(targets)
    return SkillData(torch.stack(images), target)


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
                    "count": len(SHAPES)}[skill]
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
