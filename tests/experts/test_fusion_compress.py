"""Token compression of the fused grid (fusion options compress / compress_factor)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from experts import build_fusion, build_mixture
from experts.fusion import FusionError


def _feats(dims, t=64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, t, d, generator=gen) for d in dims]


def test_unshuffle_is_a_lossless_regrouping_of_the_fused_grid():
    plain = build_fusion("channel_concat", [8, 4], 64)
    packed = build_fusion("channel_concat", [8, 4], 64, compress="unshuffle", compress_factor=2)
    assert (packed.out_tokens, packed.out_dim) == (16, 48)
    out, ref = packed(_feats([8, 4])), plain(_feats([8, 4]))
    assert out.shape == (2, 16, 48)
    grid = ref.transpose(1, 2).reshape(2, 12, 8, 8)
    torch.testing.assert_close(out, F.pixel_unshuffle(grid, 2).flatten(2).transpose(1, 2))
    assert sorted(out.flatten().tolist()) == sorted(ref.flatten().tolist())  # same numbers, regrouped


def test_avgpool_averages_each_window_and_works_per_expert_block():
    pooled = build_fusion("channel_concat", [8], 64, compress="avgpool", compress_factor=4)
    x = _feats([8])
    assert pooled(x).shape == (2, 4, 8)
    torch.testing.assert_close(pooled(x)[:, 0], x[0].reshape(2, 8, 8, 8)[:, :4, :4].mean((1, 2)))
    seq = build_fusion("sequence_append", [8, 8], 64, compress="avgpool")  # 2 grids of 8x8 -> 2 x 16
    assert (seq.out_tokens, seq.out_dim) == (32, 8) and seq(_feats([8, 8])).shape == (2, 32, 8)


def test_compression_in_a_mixture_and_its_gradients():
    torch.manual_seed(0)
    mix = build_mixture(["tiny-clip", "tiny-siglip2"], "sva", {"compress": "unshuffle"})
    assert (mix.num_tokens, mix.out_dim) == (4, 4 * 32)
    out = mix(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 4, 128)
    out.sum().backward()
    assert all(p.grad is not None for p in mix.fusion.parameters())


@pytest.mark.parametrize("options,match", [
    ({"compress": "zip"}, r"option 'compress'='zip'; known: none, unshuffle, avgpool"),
    ({"compress": "avgpool", "compress_factor": 0}, r"'compress_factor'=0 must be an int >= 1"),
    ({"compress": "unshuffle", "compress_factor": 3}, r"cannot compress 64 tokens .* multiple of compress_factor"),
])
def test_bad_compression_is_one_line(options, match):
    with pytest.raises(FusionError, match=match):
        build_fusion("channel_concat", [8], 64, **options)
