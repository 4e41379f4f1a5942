"""The Spatial Vision Aggregator's defining property: each query sees its own window only."""
from __future__ import annotations

import pytest
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


def test_llm_layer_aggregator_reads_its_window_and_touches_only_visual_tokens():
    from experts.fusion import FusionError
    from experts.fusion.sva_layers import LLMLayerAggregators

    torch.manual_seed(0)
    agg = LLMLayerAggregators((0, 3), [24, 40], GRID, visual_tokens=4, hidden=16, heads=2)  # 2x2 visual tokens, 2x2 windows
    with torch.no_grad():
        for blk in agg.blocks.values():
            blk.o.weight.normal_()
    feats = _feats([24, 40])
    slots = torch.tensor([[False, True, True, True, True, False]])
    hidden = torch.randn(1, 6, 16)
    out = agg.residual(3, hidden, feats, slots)
    assert out.shape == hidden.shape
    torch.testing.assert_close(out[:, [0, 5]], hidden[:, [0, 5]])  # text tokens untouched
    assert (out[:, 1:5] - hidden[:, 1:5]).abs().amax(-1).min() > 1e-4
    moved = [feats[0], feats[1].clone()]
    moved[1][:, [2, 3, 6, 7]] += 5.0 * torch.randn(1, 4, 40)  # visual token 1's window only
    changed = (agg.residual(3, hidden, moved, slots) - out).abs().amax(-1)[0] > 1e-4
    assert changed.tolist() == [False, False, True, False, False, False]
    with pytest.raises(FusionError, match="square grid dividing"):
        LLMLayerAggregators((0,), [24], GRID, visual_tokens=9, hidden=16, heads=1)
    with pytest.raises(FusionError, match="does not divide the LLM's width 16"):
        LLMLayerAggregators((0,), [24], GRID, visual_tokens=4, hidden=16, heads=3)
    with pytest.raises(FusionError, match="layer 3 is out of range, the LLM has 2 decoder layers"):
        agg.attach(torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()]))
