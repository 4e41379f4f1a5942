"""Shared bits for the expert tests (the `kit` fixture): tiny presets, images, raw-backbone
references. A fixture, not a module, so it works in any pytest import mode."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import experts
from experts.base import tokens_to_map

TINY = list(experts.TINY_PRESETS)


def images(b: int = 2, size: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def tiny(name: str, **overrides) -> experts.VisionExpert:
    torch.manual_seed(0)
    return experts.build_expert(experts.get_preset(name).with_overrides(**overrides))


def at_scale(name: str, factor: int, **overrides) -> experts.VisionExpert:
    """The tiny preset run at `factor` x its input size, with the grid it then reaches."""
    cfg = experts.get_preset(name)
    size = cfg.input_size * factor
    grid = cfg.grid * factor if cfg.align == "none" else cfg.grid
    return tiny(name, input_size=size, grid=grid, **overrides)


def raw_feature_map(expert: experts.VisionExpert, pixels: torch.Tensor) -> torch.Tensor:
    """The backbone's own forward with no interpolation of ours (reference for native size)."""
    bb, fam, fl = expert.backbone, expert.config.family, expert.config.feature_layer
    if fam == "clip":
        out = bb(pixel_values=pixels, interpolate_pos_encoding=False, output_hidden_states=True)
        return tokens_to_map((out.last_hidden_state if fl == -1 else out.hidden_states[fl])[:, 1:])
    if fam == "dinov2":
        return tokens_to_map(bb(pixel_values=pixels).last_hidden_state[:, 1:])
    if fam == "sam":
        return bb(pixel_values=pixels).last_hidden_state
    if fam == "pix2struct":
        from experts.families.pix2struct import flattened_patches

        patches = flattened_patches(pixels, expert.patch_stride())
        out = bb(flattened_patches=patches, attention_mask=torch.ones(patches.shape[:2]))
        return tokens_to_map(out.last_hidden_state)
    if fam == "eva02":
        import timm

        arch = dict(expert.config.arch)
        fixed = timm.create_model(arch.pop("model_name"), num_classes=0, dynamic_img_size=False, **arch)
        fixed.load_state_dict(bb.state_dict())
        fixed.eval()
        return tokens_to_map(fixed.forward_features(pixels)[:, fixed.num_prefix_tokens:])
    if fam == "convnext":
        return bb.forward_features(pixels)
    raise AssertionError(fam)


@pytest.fixture
def kit():
    return SimpleNamespace(images=images, tiny=tiny, at_scale=at_scale, raw_feature_map=raw_feature_map)
