"""B: ConvNeXt (timm; full size = the CLIP ConvNeXt-XXL `convnext_xxlarge.clip_laion2b_soup`).
Fully convolutional, so a higher resolution needs no position interpolation; feature_layer
picks the stage (-1 = last, stride 32)."""
from __future__ import annotations

import torch

from experts.backbones import TimmExpert
from experts.errors import ExpertConfigError


class ConvNextExpert(TimmExpert):
    family = "convnext"

    def _stage(self) -> int:
        n = len(self.backbone.stages)
        fl = self.config.feature_layer
        if not -n <= fl < n:
            raise ExpertConfigError(f"expert {self.config.name!r}: feature_layer={fl} but ConvNeXt has {n} stages")
        return fl % n

    def patch_stride(self) -> int:
        return self.backbone.feature_info[self._stage()]["reduction"]

    def feature_width(self) -> int:
        return self.backbone.feature_info[self._stage()]["num_chs"]

    def unused_prefixes(self) -> tuple[str, ...]:
        later = tuple(f"stages.{i}." for i in range(self._stage() + 1, len(self.backbone.stages)))
        return ("head.", "norm_pre.") + later

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_intermediates(pixels, indices=[self._stage()], intermediates_only=True)[0]
