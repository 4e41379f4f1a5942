"""timm: any timm model declared in YAML. `arch.model_name` (+ create_model kwargs) builds it;
`source` is a timm name with its pretrained tag, an `hf-hub:` id, or a local .safetensors file.
Features come from `forward_intermediates` at `feature_layer` (an index into the model's
feature_info: blocks for a ViT, stages for a CNN; -1 = the last, with the final norm), as NCHW.
ViT-like models are created with `dynamic_img_size` so timm resizes their position embeddings
(and RoPE) to the input's grid; mean/std default to the model's pretrained config."""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

import torch
from torch import nn

from experts.backbones import TimmExpert
from experts.config import ExpertConfig
from experts.errors import ExpertConfigError
from experts.families.generic import DryRunUnused
from experts.loading import _first_line, create_timm, saved_expert_dir, timm_kwargs

logger = logging.getLogger(__name__)


@functools.cache
def _takes_dynamic_size(model_name: str) -> bool:
    """Whether the model class accepts dynamic_img_size (checked by a meta build, no weights)."""
    import timm

    try:
        with torch.device("meta"):
            timm.create_model(model_name, pretrained=False, num_classes=0, dynamic_img_size=True)
    except TypeError:
        return False
    return True


class TimmGenericExpert(DryRunUnused, TimmExpert):
    family = "timm"

    @classmethod
    def resolve_config(cls, config: ExpertConfig) -> ExpertConfig:
        if config.mean is not None or saved_expert_dir(config.source):
            return config
        import timm

        name, _ = timm_kwargs(config, {})
        ref = config.source if config.source and "." in config.source and "/" not in config.source else name
        pcfg = timm.models.get_pretrained_cfg(ref) or timm.models.get_pretrained_cfg(name)
        if pcfg is None or pcfg.mean is None:
            return config
        logger.info("expert %s: mean/std from timm's pretrained config of %s", config.name, ref)
        return config.with_overrides(mean=tuple(pcfg.mean), std=tuple(pcfg.std))

    @classmethod
    def timm_fixed(cls, config: ExpertConfig) -> dict[str, Any]:
        name, _ = timm_kwargs(config, {})
        dynamic = "dynamic_img_size" not in config.arch and _takes_dynamic_size(name)
        return {"num_classes": 0, **({"dynamic_img_size": True} if dynamic else {})}

    def meta_twin(self) -> nn.Module:
        return create_timm(self.config.with_overrides(arch=self.export_arch()), self.timm_fixed(self.config))

    def _index(self) -> int:
        n = len(self.backbone.feature_info)
        fl = self.config.feature_layer
        if not -n <= fl < n:
            raise ExpertConfigError(f"expert {self.config.name!r}: feature_layer={fl} but the model has {n} feature levels")
        return fl % n

    def patch_stride(self) -> int:
        return self.backbone.feature_info[self._index()]["reduction"]

    def feature_width(self) -> int:
        return self.backbone.feature_info[self._index()]["num_chs"]

    def backbone_native_size(self) -> int | None:
        size = getattr(getattr(self.backbone, "patch_embed", None), "img_size", None)
        return int(size[0]) if size else None

    def run_backbone(self, backbone: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        params = inspect.signature(backbone.forward_intermediates).parameters
        kw: dict[str, Any] = {"indices": [self._index()], "intermediates_only": True}
        if "norm" in params:
            kw["norm"] = self.config.feature_layer == -1
        if "output_fmt" in params:
            kw["output_fmt"] = "NCHW"
        try:
            return backbone.forward_intermediates(pixels, **kw)[0]
        except NotImplementedError as exc:
            raise ExpertConfigError(f"expert {self.config.name!r}: timm model lacks forward_intermediates ({_first_line(exc)})") from None
