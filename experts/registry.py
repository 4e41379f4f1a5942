"""Name -> thing registries (families, presets, fusions) and the factories that use them."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from experts.base import VisionExpert
from experts.families.clip import ClipExpert
from experts.config import ExpertConfig
from experts.families.convnext import ConvNextExpert
from experts.families.dinov2 import Dinov2Expert
from experts.errors import UnknownNameError
from experts.lookup import Registry
from experts.families.eva02 import Eva02Expert
from experts.families.hf_vision import HFVisionExpert
from experts.loading import WEIGHTS_FILE, SafetensorsState, default_dtype, read_saved_config, stream_safetensors
from experts.families.pix2struct import Pix2StructExpert
from experts.presets import PRESETS
from experts.fusion import FUSIONS
from experts.fusion.compress import CompressedFusion, pop_compression
from experts.families.sam import SamExpert
from experts.families.timm_generic import TimmGenericExpert

EXPERT_FAMILIES: Registry[type[VisionExpert]] = Registry("expert family")
for _cls in (ClipExpert, ConvNextExpert, SamExpert, Dinov2Expert, Pix2StructExpert, Eva02Expert, HFVisionExpert,
             TimmGenericExpert):
    EXPERT_FAMILIES.register(_cls.family, _cls)


def get_family(name: str) -> type[VisionExpert]:
    return EXPERT_FAMILIES.get(name)


def get_preset(name: str) -> ExpertConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError("expert preset", name, PRESETS) from None


def build_expert(cfg: ExpertConfig | str, dtype: torch.dtype | None = None) -> VisionExpert:
    """A VisionExpert from a config (or preset name): weights from `source` when pretrained, read
    straight into `dtype` (no fp32 copy first); a random init is drawn in fp32 and cast, so it is
    the same init in every precision."""
    if isinstance(cfg, str):
        cfg = get_preset(cfg)
    cls = get_family(cfg.family)
    cfg = cls.resolve_config(cfg)
    with default_dtype(dtype if cfg.pretrained else None):
        expert = cls(cfg, cls.load_backbone(cfg) if cfg.pretrained else None)
    return expert.to(dtype) if dtype is not None else expert


def load_expert(directory, load_state=None, dtype: torch.dtype | None = None) -> VisionExpert:
    """Read back what VisionExpert.save_pretrained wrote (strict: every weight must fit), built in
    `dtype` and filled one tensor at a time. `load_state(module, state)` replaces that (a trainer's
    partitioned-weight loader; it gets the state already in `dtype`)."""
    cfg = read_saved_config(directory)
    with default_dtype(dtype):
        expert = get_family(cfg.family)(cfg)
    if load_state is None:
        stream_safetensors(expert, Path(directory).expanduser() / WEIGHTS_FILE)
    else:
        load_state(expert, SafetensorsState(Path(directory).expanduser() / WEIGHTS_FILE, dtype=dtype))
    return expert


def build_fusion(name: str, in_dims: list[int], num_tokens: int, **options):
    """The fusion; with options `compress` (unshuffle | avgpool) and `compress_factor`, wrapped so its
    token grid is compressed (experts.fusion.compress)."""
    cls = FUSIONS.get(name)
    mode, factor, options = pop_compression(name, options)
    fusion = cls(list(in_dims), num_tokens, **options)
    if mode == "none":
        return fusion
    return CompressedFusion(fusion, mode, factor, math.isqrt(num_tokens))
