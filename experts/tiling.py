"""Dynamic tiling (InternVL / Eagle 2 style) for one expert: each image is cut into rows x cols
tiles at the expert's native size, the layout (rows*cols <= max_tiles) chosen by the image's aspect
ratio, plus a thumbnail of the whole image; all are encoded in one batch.

Mixing with fixed-grid experts: a mixture needs every expert on the same grid x grid tokens, so a
tiled expert spends its tiles on detail per token, not on more tokens. The tiles' feature maps are
stitched into one (rows*g) x (cols*g) map and average-pooled to the grid (each token summarises
its own region at tile resolution); the thumbnail's map (aligned like any expert's) is
concatenated channel-wise: out_dim = 2 x width, token count = grid^2, the same budget as the
other experts. Compute is bounded by max_tiles + 1 encoder passes per image."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def tile_layout(height: int, width: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """(rows, cols) with rows*cols <= max_tiles whose aspect ratio is closest to the image's; on a tie
    the larger layout wins when the image has the pixels to fill more than half of it."""
    ratio = width / height
    best, best_diff = (1, 1), float("inf")
    layouts = sorted({(r, c) for r in range(1, max_tiles + 1) for c in range(1, max_tiles + 1) if r * c <= max_tiles},
                     key=lambda rc: rc[0] * rc[1])
    for r, c in layouts:
        diff = abs(ratio - c / r)
        if diff < best_diff - 1e-9:
            best, best_diff = (r, c), diff
        elif abs(diff - best_diff) <= 1e-9 and height * width > 0.5 * tile * tile * r * c:
            best = (r, c)
    return best


def split_dynamic(images: torch.Tensor, max_tiles: int, tile: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """[B, 3, H, W] -> (tiles of every image then the B thumbnails [N + B, 3, tile, tile], layouts)."""
    b, c, h, w = images.shape
    rows, cols = tile_layout(h, w, max_tiles, tile)  # one batch shares H x W, so one layout
    big = F.interpolate(images, size=(rows * tile, cols * tile), mode="bilinear", align_corners=False, antialias=True)
    tiles = big.reshape(b, c, rows, tile, cols, tile).permute(0, 2, 4, 1, 3, 5).reshape(b * rows * cols, c, tile, tile)
    thumbs = F.interpolate(images, size=(tile, tile), mode="bilinear", align_corners=False, antialias=True)
    return torch.cat([tiles, thumbs]), [(rows, cols)] * b


def merge_dynamic(fmaps: torch.Tensor, layouts: list[tuple[int, int]], grid: int, align) -> torch.Tensor:
    """Per-tile maps [N + B, C, g, g] -> tokens [B, grid*grid, 2C] (pooled tiles ++ aligned thumbnail)."""
    b = len(layouts)
    rows, cols = layouts[0]
    n, ch, g, _ = fmaps.shape
    tiles, thumbs = fmaps[: n - b], fmaps[n - b:]
    stitched = tiles.reshape(b, rows, cols, ch, g, g).permute(0, 3, 1, 4, 2, 5).reshape(b, ch, rows * g, cols * g)
    detail = F.adaptive_avg_pool2d(stitched, grid).flatten(2).transpose(1, 2)
    return torch.cat([detail, align(thumbs)], dim=-1)
