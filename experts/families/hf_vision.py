"""hf_vision: any transformers vision tower declared in YAML. `arch.model_type` (+ config kwargs)
builds a random-init tower through AutoConfig; `source` (hub id or local dir) loads one, taking
the vision half (`vision_config`) of a CLIP/SigLIP-style dual encoder or of a VLM (`weights_prefix`
maps its keys). Prefix tokens (CLS, registers) are dropped: the patch tokens are the last
(size/patch)^2 of the sequence. Position embeddings are resized where the model offers it
(`interpolate_pos_encoding`, NaFlex `spatial_shapes`, DINOv2/v3 and InternViT always do); a model
that cannot run at input_size fails the construction-time meta dry run with a clear error."""
from __future__ import annotations

import inspect
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from experts.backbones import HFExpert
from experts.base import tokens_to_map
from experts.config import ExpertConfig
from experts.errors import ExpertConfigError, ExpertLoadError
from experts.families.generic import DryRunUnused, hf_preprocessor_stats
from experts.loading import (
    _first_line,
    hf_arch,
    load_hf,
    load_saved_backbone,
    looks_like_path,
    saved_expert_dir,
)

logger = logging.getLogger(__name__)


def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def vision_config_of(config):
    """The vision tower's config: the config itself, or its `vision_config` (dual encoders, VLMs)."""
    return getattr(config, "vision_config", None) or config


def model_class_for(name: str, config) -> type:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        raise ExpertConfigError(f"expert {name!r}: transformers has no AutoModel for {type(config).__name__}") from None


def random_config(cfg: ExpertConfig):
    from transformers import AutoConfig

    arch = dict(cfg.arch)
    model_type = arch.pop("model_type", None)
    if not model_type:
        raise ExpertConfigError(f"expert {cfg.name!r}: an hf_vision expert needs arch.model_type (or a source)")
    try:
        return vision_config_of(AutoConfig.for_model(model_type, **arch))
    except (ValueError, TypeError) as exc:
        raise ExpertConfigError(f"expert {cfg.name!r}: bad hf_vision arch ({_first_line(exc)})") from None


def tower_config(cfg: ExpertConfig):
    """The config a tower is built from without its weights: `arch` when it names a model_type, else
    the source's config.json (a local directory or the hub cache; offline and absent: one line)."""
    if cfg.arch.get("model_type") or not cfg.source or saved_expert_dir(cfg.source):
        return random_config(cfg)
    return source_config(cfg)


def source_config(cfg: ExpertConfig):
    """The tower's config read from `source`, with `arch` keys (other than model_type) overriding it."""
    from transformers import AutoConfig

    src = cfg.source
    if looks_like_path(src) and not Path(src).expanduser().is_dir():
        raise ExpertLoadError(f"expert {cfg.name!r}: weight directory {src!r} does not exist")
    try:
        config = vision_config_of(AutoConfig.from_pretrained(src))
    except Exception as exc:  # hub unreachable, offline, no config.json
        raise ExpertLoadError(f"expert {cfg.name!r}: cannot read a config from {src!r} ({_first_line(exc)})") from exc
    for key, value in cfg.arch.items():
        if key != "model_type":
            setattr(config, key, value)
    return config


class HFVisionExpert(DryRunUnused, HFExpert):
    family = "hf_vision"

    @classmethod
    def resolve_config(cls, config: ExpertConfig) -> ExpertConfig:
        if config.mean is not None or not config.source or saved_expert_dir(config.source):
            return config
        stats = hf_preprocessor_stats(config)
        if stats is None:
            return config
        logger.info("expert %s: mean/std from %s's preprocessor config", config.name, config.source)
        return config.with_overrides(mean=stats[0], std=stats[1])

    @classmethod
    def build_backbone(cls, config: ExpertConfig) -> nn.Module:
        vcfg = tower_config(config)
        return model_class_for(config.name, vcfg)(vcfg)

    @classmethod
    def load_backbone(cls, config: ExpertConfig) -> nn.Module:
        if saved_expert_dir(config.source):
            return load_saved_backbone(cls, config)
        vcfg = source_config(config)
        # a VLM checkpoint nests its parts under `model.` (transformers >= 4.52) or not (older layout,
        # also what transformers 5 saves): the prefix matches either way
        prefix = config.weights_prefix.removeprefix("model.") if config.weights_prefix else None
        extra = {"key_mapping": {f"^(?:model\\.)?{re.escape(prefix)}": ""}} if prefix else {}
        return load_hf(model_class_for(config.name, vcfg), config, config=vcfg, **extra)

    def export_arch(self) -> dict[str, Any]:
        return {"model_type": self.backbone.config.model_type, **hf_arch(self.backbone.config)}

    def meta_twin(self) -> nn.Module:
        return type(self.backbone)(self.backbone.config)

    def patch_stride(self) -> int:
        return _side(self.backbone.config.patch_size)

    def feature_width(self) -> int:
        return self.backbone.config.hidden_size

    def backbone_native_size(self) -> int | None:
        c = self.backbone.config
        if getattr(c, "num_patches", None) and not getattr(c, "image_size", None):  # NaFlex (SigLIP2)
            return math.isqrt(c.num_patches) * self.patch_stride()
        return _side(c.image_size) if getattr(c, "image_size", None) else None

    def run_backbone(self, backbone: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        p = self.patch_stride()
        b, _, h, w = pixels.shape
        gh, gw = h // p, w // p
        params = inspect.signature(backbone.forward).parameters
        kw: dict[str, Any] = {"output_hidden_states": self.config.feature_layer != -1}
        if "spatial_shapes" in params:  # NaFlex: patches flattened (row, col, then p*p*C channels-last)
            x = pixels.reshape(b, 3, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, p * p * 3)
            # every patch is valid: no attention mask (same result, no host sync)
            kw.update(pixel_attention_mask=None, spatial_shapes=torch.tensor([[gh, gw]] * b, device="cpu"))  # read for sizes only
        else:
            x = pixels
            if "interpolate_pos_encoding" in params:
                kw["interpolate_pos_encoding"] = True
        out = backbone(pixel_values=x, **kw)
        fl, depth = self.config.feature_layer, backbone.config.num_hidden_layers
        if not -(depth + 1) <= fl <= depth:
            raise ExpertConfigError(f"expert {self.config.name!r}: feature_layer={fl} is outside the {depth + 1} hidden states")
        states = out.last_hidden_state if fl == -1 else out.hidden_states[fl]
        return tokens_to_map(states[:, -gh * gw:])  # CLS / register tokens lead the sequence
