"""D: DINOv2 ViT (transformers Dinov2Model); its embeddings interpolate the position table to the
input's patch grid (bicubic), which is the identity at the native size."""
from __future__ import annotations

import torch
from transformers import Dinov2Config, Dinov2Model

from experts.backbones import HFExpert, ViTConfigSizes
from experts.base import tokens_to_map


class Dinov2Expert(ViTConfigSizes, HFExpert):
    family = "dinov2"
    model_cls = Dinov2Model
    config_cls = Dinov2Config

    def unused_prefixes(self) -> tuple[str, ...]:
        final = () if self.config.feature_layer == -1 else ("layernorm.",)
        depth = self.backbone.config.num_hidden_layers
        return ("embeddings.mask_token",) + final + self.later_layers("encoder.layer.", depth)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=pixels, output_hidden_states=self.config.feature_layer != -1)
        h = self.hidden_state(out, out.last_hidden_state)
        return tokens_to_map(h[:, 1:])  # drop CLS
