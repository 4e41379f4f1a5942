"""A: CLIP ViT (transformers CLIPVisionModel); high resolution by bicubic position-embedding
interpolation (transformers' interpolate_pos_encoding, identity at the native size)."""
from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from experts.backbones import HFExpert, ViTConfigSizes
from experts.base import tokens_to_map


class ClipExpert(ViTConfigSizes, HFExpert):
    family = "clip"
    model_cls = CLIPVisionModel
    config_cls = CLIPVisionConfig

    def unused_prefixes(self) -> tuple[str, ...]:
        depth = self.backbone.config.num_hidden_layers
        return ("post_layernorm.",) + self.later_layers("encoder.layers.", depth)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=pixels, interpolate_pos_encoding=True,
                            output_hidden_states=self.config.feature_layer != -1)
        h = self.hidden_state(out, out.last_hidden_state)
        return tokens_to_map(h[:, 1:])  # drop CLS
