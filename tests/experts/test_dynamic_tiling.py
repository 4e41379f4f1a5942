"""Dynamic tiling (highres=dynamic): layouts by aspect ratio, tiles at native size + thumbnail,
the same grid as fixed-grid experts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import experts
from experts.tiling import split_dynamic, tile_layout


@pytest.mark.parametrize("h,w,max_tiles,want", [
    (64, 64, 1, (1, 1)), (64, 64, 6, (2, 2)), (64, 128, 6, (1, 2)), (64, 192, 6, (1, 3)),
    (128, 64, 6, (2, 1)), (10, 10, 6, (1, 1)),  # too small to fill more than one tile
    (64, 384, 4, (1, 4)),  # 6:1 wanted, 4 tiles at most
])
def test_layout_follows_the_aspect_ratio_under_the_tile_budget(h, w, max_tiles, want):
    assert tile_layout(h, w, max_tiles, tile=32) == want


def test_tiles_cover_the_resized_image_in_row_major_order():
    img = torch.rand(1, 3, 32, 64)
    crops, layouts = split_dynamic(img, 6, 16)
    assert layouts == [(1, 2)] and crops.shape == (3, 3, 16, 16)  # 2 tiles + 1 thumbnail
    big = F.interpolate(img, size=(16, 32), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(crops[0], big[0, :, :, :16])
    torch.testing.assert_close(crops[1], big[0, :, :, 16:])


def test_a_dynamic_expert_mixes_with_fixed_grid_experts_and_learns():
    torch.manual_seed(0)
    cfg = experts.get_preset("tiny-siglip2").with_overrides(highres="dynamic", max_tiles=4, freeze=False)
    dyn = experts.build_expert(cfg)
    assert dyn.out_dim == 64 and dyn.num_tokens == 16
    wide = torch.rand(2, 3, 64, 128)  # 1x2 tiles + thumbnail
    out = dyn(wide)
    assert out.shape == (2, 16, 64)
    plain = experts.build_expert(cfg.with_overrides(highres="interpolate"))
    plain.load_state_dict(dyn.state_dict())
    torch.testing.assert_close(out[..., 32:], plain(wide))  # the thumbnail half is the plain expert
    mix = experts.build_mixture([experts.get_preset("tiny-clip"), cfg], "sva")
    assert mix(wide).shape == (2, 16, 64)
    opt = torch.optim.Adam(dyn.parameters(), lr=1e-2)
    target = torch.randn(2, 16, 64)
    losses = []
    for _ in range(15):
        loss = F.mse_loss(dyn(wide), target)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_dynamic_with_unshuffle_is_refused():
    with pytest.raises(experts.ExpertConfigError, match="highres=dynamic needs align 'none' or 'resize'"):
        experts.build_expert(experts.get_preset("tiny-sam").with_overrides(highres="dynamic"))
