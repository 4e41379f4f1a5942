"""High-resolution adaptation: position-embedding interpolation and tiled input."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_pos_grid(pos: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize a channels-last 2-D position grid [1, h, w, C] to [1, H, W, C]; identity (same
    tensor) when the size already matches, so native-size runs are untouched."""
    if tuple(pos.shape[1:3]) == tuple(size):
        return pos
    grid = pos.permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=size, mode=mode, align_corners=False)
    return grid.permute(0, 2, 3, 1).to(pos.dtype)


def resize_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Stretch a 1-D embedding table [N, C] to [length, C] (linear); identity if length <= N
    (the first `length` rows are all a lookup can reach)."""
    if length <= table.shape[0]:
        return table
    out = F.interpolate(table.t()[None].float(), size=length, mode="linear", align_corners=True)
    return out[0].t().to(table.dtype)


def split_tiles(images: torch.Tensor, tile: int) -> tuple[torch.Tensor, int]:
    """[B, 3, k*t, k*t] -> ([B*k*k, 3, t, t] row-major per image, k)."""
    b, c, h, w = images.shape
    k = h // tile
    x = images.reshape(b, c, k, tile, k, tile).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * k * k, c, tile, tile), k


def stitch_tiles(fmaps: torch.Tensor, k: int) -> torch.Tensor:
    """[B*k*k, C, g, g] per-tile feature maps -> [B, C, k*g, k*g] (inverse of split_tiles' order)."""
    n, c, g, _ = fmaps.shape
    b = n // (k * k)
    x = fmaps.reshape(b, k, k, c, g, g).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, k * g, k * g)
