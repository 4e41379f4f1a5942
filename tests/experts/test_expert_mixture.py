"""VisionMixture over tiny experts with the registry's fusions."""
from __future__ import annotations

import pytest
import torch

import experts

TINY = list(experts.TINY_PRESETS)


@pytest.mark.parametrize("names", [TINY[:1], ["tiny-clip", "tiny-convnext"], TINY], ids=["1", "2", "6"])
def test_channel_concat_mixture_shapes(kit, names):
    torch.manual_seed(0)
    mix = experts.build_mixture(names, "channel_concat")
    widths = [e.out_dim for e in mix.experts]
    assert mix.num_tokens == 16 and mix.out_dim == sum(widths)
    img = kit.images(2, 96)
    out = mix(img)
    assert out.shape == (2, 16, sum(widths))
    # channel concat: the slices are the experts' own outputs
    start = 0
    for e, w in zip(mix.experts, widths):
        torch.testing.assert_close(out[..., start:start + w], e(img))
        start += w


def test_other_fusion_from_registry(kit):
    mix = experts.build_mixture(["tiny-sam", "tiny-eva02"], "sequence_append", {})
    out = mix(kit.images(1, 64))
    assert out.shape == (1, mix.num_tokens, mix.out_dim) and mix.num_tokens == 32


def test_per_expert_freezing_in_a_mixture(kit):
    mix = experts.build_mixture(["tiny-clip", "tiny-dinov2"], "channel_concat")
    mix.set_expert_trainable(1, True)
    mix.train()
    assert not mix.experts[0].backbone.training and mix.experts[1].backbone.training
    mix(kit.images(2, 56)).pow(2).mean().backward()
    assert all(p.grad is None for p in mix.experts[0].parameters())
    assert all(p.grad is not None for p in mix.experts[1].parameters() if p.requires_grad)
    with pytest.raises(IndexError, match="index 5.*2"):
        mix.set_expert_trainable(5, True)


def test_mixture_needs_one_grid():
    a = experts.build_expert("tiny-clip")
    b = experts.build_expert(experts.get_preset("tiny-eva02").with_overrides(grid=8, align="none"))
    with pytest.raises(experts.ExpertConfigError, match="share one grid.*tiny-clip=4x4.*tiny-eva02=8x8"):
        experts.VisionMixture([a, b], "channel_concat")
    with pytest.raises(experts.ExpertConfigError, match="at least one expert"):
        experts.VisionMixture([], "channel_concat")


def test_fusions_registry_is_exposed():
    assert {"sequence_append", "channel_concat", "llava_hr", "mini_gemini", "deformable"} <= set(experts.FUSIONS)
    f = experts.build_fusion("channel_concat", [8, 24], 16)
    assert f.out_dim == 32 and f.out_tokens == 16
