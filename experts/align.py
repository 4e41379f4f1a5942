"""Token-grid alignment: bring an expert's feature map to the mixture's shared grid."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from experts.errors import ExpertConfigError

ALIGN_MODES = ("none", "resize", "unshuffle")


def aligned_width(expert: str, mode: str, feat_grid: int, grid: int, width: int) -> int:
    """Width of the aligned tokens; raises ExpertConfigError naming the expert and sizes when the
    grid cannot be reached with `mode`."""
    if mode not in ALIGN_MODES:
        raise ExpertConfigError(f"expert {expert!r}: unknown align {mode!r}; known: {', '.join(ALIGN_MODES)}")
    if mode == "none":
        if feat_grid != grid:
            raise ExpertConfigError(
                f"expert {expert!r}: align='none' needs the feature grid {feat_grid}x{feat_grid} "
                f"to equal the target grid {grid}x{grid}; use align='resize' or 'unshuffle' or change input_size"
            )
        return width
    if mode == "unshuffle":
        if feat_grid < grid or feat_grid % grid:
            raise ExpertConfigError(
                f"expert {expert!r}: pixel-unshuffle cannot turn a {feat_grid}x{feat_grid} feature grid into "
                f"{grid}x{grid} (needs an integer factor >= 1)"
            )
        return width * (feat_grid // grid) ** 2
    return width


class GridAligner(nn.Module):
    """[B, C, h, w] feature map -> [B, grid*grid, C'] tokens (row-major)."""

    def __init__(self, mode: str, grid: int) -> None:
        super().__init__()
        self.mode, self.grid = mode, grid

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        h = fmap.shape[-1]
        if self.mode == "unshuffle" and h != self.grid:
            fmap = F.pixel_unshuffle(fmap, h // self.grid)
        elif self.mode == "resize" and h != self.grid:
            fmap = F.interpolate(fmap, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return fmap.flatten(2).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, grid={self.grid}"
