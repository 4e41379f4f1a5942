"""Every tiny expert: output shape at native and higher resolution, identity of interpolation at
native size, tiled input."""
from __future__ import annotations

import pytest
import torch

import experts
from experts.highres import resize_table, split_tiles, stitch_tiles

TINY = list(experts.TINY_PRESETS)


@pytest.mark.parametrize("name", TINY)
def test_native_shape_matches_grid_and_width(kit, name):
    e = kit.tiny(name)
    cfg = e.config
    out = e(kit.images(2, 80))
    assert out.shape == (2, cfg.grid * cfg.grid, e.out_dim)
    assert e.num_tokens == 16 and e.grid == 4
    width = cfg.hidden_size * (e.feature_grid // cfg.grid) ** 2 if cfg.align == "unshuffle" else cfg.hidden_size
    assert e.out_dim == width
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", TINY)
def test_double_resolution_interpolated(kit, name):
    e = kit.at_scale(name, 2)
    base = kit.tiny(name)
    assert e.feature_grid == 2 * base.feature_grid
    out = e(kit.images(1, 50))
    assert out.shape == (1, e.grid * e.grid, e.out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", TINY)
def test_interpolation_is_identity_at_native_size(kit, name):
    cfg = experts.get_preset(name)
    e = kit.tiny(name, input_size=cfg.native_size, grid=cfg.native_size // 16 if cfg.family == "clip" else None).eval()
    pixels = e.preprocess(kit.images(2, 40))
    with torch.no_grad():
        torch.testing.assert_close(e.encode(pixels), kit.raw_feature_map(e, pixels))


def test_interpolation_changes_positions_off_native(kit):
    """At 64 px tiny-clip's 3x3 position table is resized, so the backbone alone refuses the input."""
    e = kit.tiny("tiny-clip").eval()
    pixels = e.preprocess(kit.images(1, 64))
    with pytest.raises(ValueError):
        e.backbone(pixel_values=pixels, interpolate_pos_encoding=False)
    assert e.encode(pixels).shape == (1, 32, 4, 4)


@pytest.mark.parametrize("name", TINY)
def test_tiled_input_shape(kit, name):
    cfg = experts.get_preset(name)
    size = 2 * cfg.native_size
    native_grid = kit.tiny(name, input_size=cfg.native_size, grid=3 if cfg.family == "clip" else None).feature_grid
    grid = 2 * native_grid if cfg.align == "none" else cfg.grid
    e = kit.tiny(name, input_size=size, highres="tiled", grid=grid)
    assert e.feature_grid == 2 * native_grid
    out = e(kit.images(2, 70))
    assert out.shape == (2, grid * grid, e.out_dim)


def test_tiled_tile_equals_encoding_the_crop(kit):
    e = kit.tiny("tiny-dinov2", input_size=112, highres="tiled", grid=8).eval()
    img = kit.images(1, 112)
    with torch.no_grad():
        whole = e(img).reshape(1, 8, 8, -1)
        crop = kit.tiny("tiny-dinov2").eval()
        crop.load_state_dict(e.state_dict())
        bottom_right = crop(img[..., 56:, 56:]).reshape(1, 4, 4, -1)
    torch.testing.assert_close(whole[:, 4:, 4:], bottom_right)


def test_tiles_round_trip(kit):
    x = torch.arange(2 * 5 * 6 * 6, dtype=torch.float32).reshape(2, 5, 6, 6)
    tiles, k = split_tiles(x, 3)
    assert tiles.shape == (8, 5, 3, 3) and k == 2
    torch.testing.assert_close(stitch_tiles(tiles, k), x)
    torch.testing.assert_close(tiles[1], x[0, :, :3, 3:])


def test_pix2struct_tables_stretch_beyond_seq_len(kit):
    e = kit.tiny("tiny-pix2struct", input_size=256)  # 16 rows, tables of 16 (ids 1..16 need 17)
    assert e(kit.images(1, 64)).shape == (1, 16, 32)
    table = torch.randn(16, 4)
    assert resize_table(table, 12) is table
    stretched = resize_table(table, 17)
    assert stretched.shape == (17, 4)
    torch.testing.assert_close(stretched[0], table[0])
    torch.testing.assert_close(stretched[-1], table[-1])


def test_bad_images_are_rejected(kit):
    e = kit.tiny("tiny-eva02")
    with pytest.raises(experts.ExpertInputError, match="tiny-eva02.*\\[B, 3, H, W\\]"):
        e(torch.rand(3, 64, 64))
    with pytest.raises(experts.ExpertInputError, match="float"):
        e(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
