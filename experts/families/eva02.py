"""F: EVA-02 ViT (timm `eva02_large_patch14_448.*`). The full-size preset rebuilds it as a
detection-style EVA-02-L: patch 16 at 1024 (timm resamples the patch and position embeddings
when loading), 64x64 features resized to 32x32. `dynamic_img_size` makes timm resize the
absolute positions and RoPE to the input's grid on every call (identity at native size)."""
from __future__ import annotations

import torch

from experts.backbones import TimmExpert
from experts.errors import ExpertConfigError


class Eva02Expert(TimmExpert):
    family = "eva02"
    fixed_kwargs = {"num_classes": 0, "dynamic_img_size": True}

    def patch_stride(self) -> int:
        return self.backbone.patch_embed.patch_size[0]

    def feature_width(self) -> int:
        return self.backbone.embed_dim

    def backbone_native_size(self) -> int:
        return self.backbone.patch_embed.img_size[0]

    def _block(self) -> int:
        depth = len(self.backbone.blocks)
        fl = self.config.feature_layer
        if not -(depth + 1) <= fl <= depth or fl % (depth + 1) == 0:
            raise ExpertConfigError(
                f"expert {self.config.name!r}: feature_layer={fl} must pick one of the {depth} blocks (1..{depth} or -1..-{depth})")
        return fl % (depth + 1) - 1

    def unused_prefixes(self) -> tuple[str, ...]:
        final = () if self.config.feature_layer == -1 else ("norm.",)
        later = tuple(f"blocks.{i}." for i in range(self._block() + 1, len(self.backbone.blocks)))
        return ("fc_norm.", "head.", "head_drop.") + final + later

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_intermediates(
            pixels, indices=[self._block()], norm=self.config.feature_layer == -1,
            output_fmt="NCHW", intermediates_only=True)[0]
