"""The two backbone kinds the families sit on: transformers models and timm models."""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from experts.base import VisionExpert
from experts.config import ExpertConfig
from experts.loading import (create_timm, hf_arch, hf_config, load_hf, load_saved_backbone, load_timm,
                             saved_expert_dir)


class HFExpert(VisionExpert):
    """A transformers vision model built from a `*Config(**arch)` or `from_pretrained(source)`."""

    model_cls: ClassVar[type]
    config_cls: ClassVar[type]

    @classmethod
    def build_backbone(cls, config: ExpertConfig) -> nn.Module:
        hf = hf_config(cls.config_cls, config)
        hf._attn_implementation = config.attention  # before construction: SAM picks its attention class then
        return cls.model_cls(hf)

    @classmethod
    def load_backbone(cls, config: ExpertConfig) -> nn.Module:
        if saved_expert_dir(config.source):
            return load_saved_backbone(cls, config)
        return load_hf(cls.model_cls, config)

    def export_arch(self) -> dict[str, Any]:
        return hf_arch(self.backbone.config)

    def _set_backbone_checkpointing(self, flag: bool) -> None:
        if flag:
            self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif self.backbone.is_activation_checkpointing:
            self.backbone.activation_checkpointing_disable()

    @property
    def checkpointing_active(self) -> bool:
        return bool(self.backbone.is_activation_checkpointing)

    def hidden_state(self, out, final) -> Any:
        """The configured layer's features: -1 = the model's final output (with its final norm),
        otherwise an index into the per-layer hidden states (0 = embeddings)."""
        fl = self.config.feature_layer
        return final if fl == -1 else out.hidden_states[fl]


class ViTConfigSizes:
    """Patch size, width and native size read from a ViT-style HF config (CLIP, DINOv2)."""

    def patch_stride(self) -> int:
        return self.backbone.config.patch_size

    def feature_width(self) -> int:
        return self.backbone.config.hidden_size

    def backbone_native_size(self) -> int:
        return self.backbone.config.image_size


class TimmExpert(VisionExpert):
    """A timm model built by `timm.create_model(arch.model_name, **arch)` (+ `fixed_kwargs`)."""

    fixed_kwargs: ClassVar[dict[str, Any]] = {"num_classes": 0}

    @classmethod
    def timm_fixed(cls, config: ExpertConfig) -> dict[str, Any]:
        """create_model kwargs the family always sets."""
        return cls.fixed_kwargs

    @classmethod
    def build_backbone(cls, config: ExpertConfig) -> nn.Module:
        model = create_timm(config, cls.timm_fixed(config))
        model.eagle_arch = dict(config.arch)
        return model

    @classmethod
    def load_backbone(cls, config: ExpertConfig) -> nn.Module:
        if saved_expert_dir(config.source):
            return load_saved_backbone(cls, config)
        model = load_timm(config, cls.timm_fixed(config))
        model.eagle_arch = dict(config.arch)
        return model

    def export_arch(self) -> dict[str, Any]:
        return dict(getattr(self.backbone, "eagle_arch", self.config.arch))

    def _set_backbone_checkpointing(self, flag: bool) -> None:
        self.backbone.set_grad_checkpointing(flag)

    @property
    def checkpointing_active(self) -> bool:
        return any(getattr(m, "grad_checkpointing", False) for m in self.backbone.modules())
