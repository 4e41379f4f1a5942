"""The Spatial Vision Aggregator's defining property: each query sees its own window only."""
from __future__ import annotations

import torch

from experts import build_fusion

GRID, T = 4, 16


def _feats(dims, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, T, d, generator=gen) for d in dims]


def test_each_query_reads_only_its_window_in_every_expert():
    torch.manual_seed(0)
    sva = build_fusion("sva", [24, 40], T, query_grid=2, heads=2, layers=2).eval()
    feats = _feats([24, 40])
    base = sva(feats)
    # query 0 covers tokens (0,0),(0,1),(1,0),(1,1) = 0, 1, 4, 5; change every other token of expert 1
    outside = [i for i in range(T) if i not in (0, 1, 4, 5)]
    moved = [feats[0], feats[1].clone()]
    moved[1][:, outside] += 5.0 * torch.randn(1, len(outside), 40)  # not a constant: LayerNorm removes those
    out = sva(moved)
    torch.testing.assert_close(out[:, 0], base[:, 0])
    assert (out[:, 1:] - base[:, 1:]).abs().amax() > 1e-3
    inside = [feats[0].clone(), feats[1]]
    inside[0][:, 5] += 5.0 * torch.randn(1, 24)  # token (1,1) of expert 0 lies in query 0's window only
    out = sva(inside)
    assert (out[:, 0] - base[:, 0]).abs().amax() > 1e-3
    torch.testing.assert_close(out[:, 1:], base[:, 1:])


def test_full_query_grid_keeps_the_tokens_and_window_one_is_per_position():
    sva = build_fusion("sva", [8, 8, 8], T)
    assert (sva.out_tokens, sva.out_dim, sva.window) == (T, 8, 1)
    feats = _feats([8, 8, 8])
    base = sva(feats)
    feats[2][:, 7] += 3.0 * torch.randn(1, 8)
    changed = (sva(feats) - base).abs().amax(-1)[0] > 1e-4
    assert changed.tolist() == [i == 7 for i in range(T)]
