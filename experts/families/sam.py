"""C: SAM ViT image encoder (transformers SamVisionModel).

transformers' SAM checks the input size and adds a fixed-size absolute position grid, so this
expert runs the encoder's parts itself: patch projection, absolute positions resized to the
input's grid (identity at native size), the blocks (global-attention blocks already stretch their
relative-position tables to the grid; windowed ones keep their window), and the neck. The
default feature (feature_layer=-1) is the neck output (256 wide for SAM ViT-L), which the
pixel-unshuffle alignment turns from 64x64 into 32x32 x 1024.
"""
from __future__ import annotations

import torch
from transformers import SamVisionConfig, SamVisionModel

from experts.backbones import HFExpert
from experts.highres import resize_pos_grid


class SamExpert(HFExpert):
    family = "sam"
    model_cls = SamVisionModel
    config_cls = SamVisionConfig

    def patch_stride(self) -> int:
        return self.backbone.config.patch_size

    def feature_width(self) -> int:
        c = self.backbone.config
        return c.output_channels if self.config.feature_layer == -1 else c.hidden_size

    def backbone_native_size(self) -> int:
        return self.backbone.config.image_size

    def unused_prefixes(self) -> tuple[str, ...]:
        if self.config.feature_layer == -1:
            return ()
        depth = self.backbone.config.num_hidden_layers
        return ("vision_encoder.neck.",) + self.later_layers("vision_encoder.layers.", depth)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        enc = self.backbone.vision_encoder
        x = enc.patch_embed.projection(pixels).permute(0, 2, 3, 1)  # [B, h, w, C]
        if enc.pos_embed is not None:
            x = x + resize_pos_grid(enc.pos_embed, tuple(x.shape[1:3]))
        fl = self.config.feature_layer
        if fl == -1:
            for layer in enc.layers:
                x = layer(x)
            return enc.neck(x)  # [B, out_channels, h, w]
        depth = len(enc.layers) + 1 + fl if fl < 0 else fl  # hidden state `fl` (0 = embeddings)
        for layer in enc.layers[:depth]:
            x = layer(x)
        return x.permute(0, 3, 1, 2)
