"""Registries, presets, letters and the build-time errors for settings that cannot work."""
from __future__ import annotations

import pytest
import torch

import experts
from experts.align import GridAligner, aligned_width


def test_unknown_names_list_the_known_ones():
    with pytest.raises(experts.UnknownNameError, match="unknown expert preset 'clip-h'.*tiny-clip.*tiny-sam") as ei:
        experts.get_preset("clip-h")
    assert isinstance(ei.value, KeyError) and "clip-l-448" in str(ei.value)
    with pytest.raises(KeyError, match="unknown expert family 'vit'; known: clip, convnext, dinov2, eva02, hf_vision, pix2struct, sam, timm"):
        experts.get_family("vit")
    with pytest.raises(experts.UnknownNameError, match="unknown fusion 'concat'.*channel_concat.*sequence_append"):
        experts.build_fusion("concat", [8, 8], 16)
    with pytest.raises(experts.UnknownNameError, match="unknown expert preset"):
        experts.build_expert("tiny-vit")


def test_letters_map_to_full_and_tiny_of_the_same_family():
    assert list(experts.LETTERS) == list("ABCDEF")
    want = ["clip", "convnext", "sam", "dinov2", "pix2struct", "eva02"]
    for (letter, (full, tiny)), family in zip(experts.LETTERS.items(), want):
        f, t = experts.get_preset(full), experts.get_preset(tiny)
        assert f.family == t.family == family and f.letter == t.letter == letter
        assert f.pretrained and not t.pretrained and f.source


def test_tiny_presets_are_heterogeneous_but_share_the_grid():
    cfgs = [experts.get_preset(n) for n in experts.TINY_PRESETS]
    assert {c.grid for c in cfgs} == {4}
    assert {c.align for c in cfgs} == {"none", "resize", "unshuffle"}
    assert len({c.input_size for c in cfgs}) >= 4
    assert any(c.input_size != c.native_size for c in cfgs)  # an interpolated one


def test_unshuffle_to_an_unreachable_grid_is_a_build_error():
    cfg = experts.get_preset("tiny-pix2struct").with_overrides(align="unshuffle")  # 6x6 -> 4x4
    with pytest.raises(experts.ExpertConfigError, match="tiny-pix2struct.*6x6.*4x4"):
        experts.build_expert(cfg)


def test_none_with_a_mismatching_grid_is_a_build_error():
    cfg = experts.get_preset("tiny-eva02").with_overrides(align="none")  # 8x8 vs 4x4
    with pytest.raises(experts.ExpertConfigError, match="tiny-eva02.*8x8.*4x4"):
        experts.build_expert(cfg)


def test_other_impossible_settings_are_build_errors():
    with pytest.raises(experts.ExpertConfigError, match="tiny-dinov2.*60.*stride 14"):
        experts.build_expert(experts.get_preset("tiny-dinov2").with_overrides(input_size=60))
    with pytest.raises(experts.ExpertConfigError, match="tiny-sam.*tiled.*96.*64"):
        experts.build_expert(experts.get_preset("tiny-sam").with_overrides(input_size=96, highres="tiled"))
    with pytest.raises(experts.ExpertConfigError, match="tiny-clip.*native_size=64.*48"):
        experts.build_expert(experts.get_preset("tiny-clip").with_overrides(native_size=64))
    with pytest.raises(experts.ExpertConfigError, match="tiny-clip.*hidden_size=64.*32 wide"):
        experts.build_expert(experts.get_preset("tiny-clip").with_overrides(hidden_size=64))
    with pytest.raises(experts.ExpertConfigError, match="tiny-clip.*unknown CLIPVisionConfig keys in arch: depth"):
        experts.build_expert(experts.get_preset("tiny-clip").with_overrides(arch={"depth": 2}))
    with pytest.raises(experts.ExpertConfigError, match="tiny-eva02.*feature_layer=7"):
        experts.build_expert(experts.get_preset("tiny-eva02").with_overrides(feature_layer=7))


def test_feature_layer_changes_which_features_come_out(kit):
    last = kit.tiny("tiny-sam", feature_layer=-2, hidden_size=32).eval()  # pre-neck block output, 32 wide
    assert last.out_dim == 32 * 4
    assert not any(p.requires_grad for n, p in last.backbone.named_parameters() if "neck" in n)
    assert last(kit.images(1, 64)).shape == (1, 16, 128)


def test_aligner_modes():
    fmap = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert aligned_width("x", "unshuffle", 8, 4, 3) == 12
    out = GridAligner("unshuffle", 4)(fmap)
    assert out.shape == (2, 16, 12)
    torch.testing.assert_close(out[0, 0, :4], fmap[0, 0, :2, :2].flatten())  # channel c, 2x2 block
    resized = GridAligner("resize", 4)(fmap)
    assert resized.shape == (2, 16, 3)
    torch.testing.assert_close(resized[0, 0, 0], fmap[0, 0, :2, :2].mean())  # bilinear 2x down = 2x2 mean
    same = GridAligner("none", 8)(fmap)
    torch.testing.assert_close(same.transpose(1, 2).reshape(2, 3, 8, 8), fmap)
    with pytest.raises(experts.ExpertConfigError, match="unknown align 'crop'"):
        aligned_width("x", "crop", 8, 4, 3)


def test_presets_declare_their_own_normalisation():
    from experts.config import CLIP_MEAN, IMAGENET_MEAN

    means = {n: experts.get_preset(n).mean for n in experts.PRESETS}
    for name in ("clip-l-448", "convnext-xxl-1024", "eva02-l-1024", "tiny-clip", "tiny-convnext", "tiny-eva02"):
        assert means[name] == CLIP_MEAN, name
    for name in ("sam-l-1024", "dinov2-l-448", "tiny-sam", "tiny-dinov2"):
        assert means[name] == IMAGENET_MEAN, name


def test_pix2struct_standardises_each_image():
    from experts.families.pix2struct import flattened_patches, standardize

    img = torch.rand(2, 3, 32, 32) * torch.tensor([1.0, 0.2]).view(2, 1, 1, 1)
    z = standardize(img)
    torch.testing.assert_close(z.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(1, 2, 3)), torch.ones(2))
    patches = flattened_patches(img, 16)
    assert patches.shape == (2, 4, 2 + 16 * 16 * 3)
    assert patches[0, :, :2].tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    torch.testing.assert_close(patches[0, 1, 2:5], img[0, :, 0, 16])  # first pixel of patch (row 1, col 2): RGB


def test_bad_override_is_one_line_naming_the_field():
    with pytest.raises(experts.ExpertConfigError, match=r"^expert 'tiny-sam': align: Input should be 'none', 'resize' or 'unshuffle'$"):
        experts.get_preset("tiny-sam").with_overrides(align="crop")
    with pytest.raises(ValueError, match="expert 'tiny-sam': input_size: .*greater than 0"):
        experts.get_preset("tiny-sam").with_overrides(input_size=-3)
    with pytest.raises(ValueError, match="expert 'tiny-sam': colour: Extra inputs"):
        experts.get_preset("tiny-sam").with_overrides(colour=1)
