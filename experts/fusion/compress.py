"""Token compression after fusion, as a study axis: the fused visual tokens, read as one or more
square grids, are pixel-unshuffled (InternVL / Eagle 2's 0.5 pixel shuffle: factor^2 fewer tokens,
factor^2 wider) or average-pooled (factor^2 fewer tokens, same width); e.g. 32x32 = 1024 -> 256.
Selected by the fusion options `compress` (none | unshuffle | avgpool) and `compress_factor`."""
from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .base import FusionError, grid_to_tokens, tokens_to_grid

COMPRESS_MODES = ("none", "unshuffle", "avgpool")


def pop_compression(fusion: str, options: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """(mode, factor, the remaining fusion options); a bad value is one FusionError line."""
    opts = dict(options)
    mode, factor = opts.pop("compress", "none"), opts.pop("compress_factor", 2)
    if mode not in COMPRESS_MODES:
        raise FusionError(f"fusion {fusion!r}: option 'compress'={mode!r}; known: {', '.join(COMPRESS_MODES)}")
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise FusionError(f"fusion {fusion!r}: option 'compress_factor'={factor!r} must be an int >= 1")
    return mode, factor, opts


class CompressedFusion(nn.Module):
    """A fusion followed by compression of its token grid(s); `.out_tokens`, `.out_dim` as a Fusion."""

    def __init__(self, inner: nn.Module, mode: str, factor: int, grid: int) -> None:
        super().__init__()
        self.inner, self.mode, self.factor = inner, mode, factor
        t = inner.out_tokens
        side = math.isqrt(t)
        self.side = side if side * side == t else grid  # sequence_append: one grid per expert
        self.blocks = t // (self.side * self.side)
        if self.blocks * self.side * self.side != t or self.side % factor:
            raise FusionError(f"fusion {inner.name!r}: cannot compress {t} tokens (grids of {self.side}x{self.side}) "
                              f"by {factor}x{factor}: the grid side must be a multiple of compress_factor")
        self.name = inner.name
        self.out_tokens = self.blocks * (self.side // factor) ** 2
        self.out_dim = inner.out_dim * (factor * factor if mode == "unshuffle" else 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = self.inner(feats)
        b, _, d = x.shape
        g = tokens_to_grid(x.reshape(b * self.blocks, self.side * self.side, d), self.side)
        g = F.pixel_unshuffle(g, self.factor) if self.mode == "unshuffle" else F.avg_pool2d(g, self.factor)
        return grid_to_tokens(g).reshape(b, self.out_tokens, self.out_dim)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, factor={self.factor}, out=[{self.out_tokens}, {self.out_dim}]"
