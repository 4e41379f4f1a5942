"""E: Pix2Struct vision encoder (transformers Pix2StructVisionModel).

Pix2Struct reads "flattened patches": per patch [row id, col id, p*p*3 pixels] with 1-based ids
(0 marks padding). This expert builds them from the image tensor the way the Pix2Struct image
processor does (per-image standardisation, patch pixels ordered (py, px, channel)), always at
the full square grid, so no padding. Its positions are learned row/column tables of `seq_len`
rows; a grid longer than that stretches the tables (identity when they already cover it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import Pix2StructForConditionalGeneration, Pix2StructVisionConfig, Pix2StructVisionModel

from experts.backbones import HFExpert
from experts.base import tokens_to_map
from experts.errors import ExpertConfigError
from experts.highres import resize_table
from experts.loading import hf_model_type, load_hf, load_saved_backbone, saved_expert_dir


def flattened_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, (H/p)*(W/p), 2 + p*p*3] with 1-based row/col ids in front."""
    b, c, h, w = images.shape
    rows, cols = h // patch, w // patch
    cells = F.unfold(images, patch, stride=patch).reshape(b, c, patch, patch, rows * cols)
    cells = cells.permute(0, 4, 2, 3, 1).reshape(b, rows * cols, patch * patch * c)
    r = torch.arange(1, rows + 1, device=images.device, dtype=images.dtype).repeat_interleave(cols)
    k = torch.arange(1, cols + 1, device=images.device, dtype=images.dtype).repeat(rows)
    ids = torch.stack([r, k], dim=-1).expand(b, -1, -1)
    return torch.cat([ids, cells], dim=-1)


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean/std normalisation (std floored at 1/sqrt(#values)), as Pix2Struct's processor."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    std = images.std(dim=(1, 2, 3), keepdim=True)
    floor = 1.0 / math.sqrt(images[0].numel())
    return (images - mean) / std.clamp_min(floor)


class Pix2StructExpert(HFExpert):
    family = "pix2struct"
    model_cls = Pix2StructVisionModel
    config_cls = Pix2StructVisionConfig

    @classmethod
    def load_backbone(cls, config) -> torch.nn.Module:
        """Public Pix2Struct checkpoints are full image-to-text models whose encoder keys sit under
        `encoder.`; load those through the full class and keep the encoder."""
        if saved_expert_dir(config.source):
            return load_saved_backbone(cls, config)
        if hf_model_type(config) == "pix2struct":
            return load_hf(Pix2StructForConditionalGeneration, config, submodule="encoder")
        return load_hf(Pix2StructVisionModel, config)

    def patch_stride(self) -> int:
        dim = self.backbone.config.patch_embed_hidden_size
        p = math.isqrt(dim // 3)
        if 3 * p * p != dim:
            raise ExpertConfigError(f"expert {self.config.name!r}: patch_embed_hidden_size={dim} is not 3*p*p")
        return p

    def feature_width(self) -> int:
        return self.backbone.config.hidden_size

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return standardize(images)  # Pix2Struct's own normalisation, not a fixed mean/std

    def embed(self, patches: torch.Tensor, side: int) -> torch.Tensor:
        emb = self.backbone.embeddings
        rows = patches[..., 0].long()
        cols = patches[..., 1].long()
        need = side + 1  # ids run 1..side
        x = emb.patch_projection(patches[..., 2:])
        x = x + F.embedding(rows, resize_table(emb.row_embedder.weight, need))
        x = x + F.embedding(cols, resize_table(emb.column_embedder.weight, need))
        return emb.dropout(x)

    def unused_prefixes(self) -> tuple[str, ...]:
        if self.config.feature_layer == -1:
            return ()
        return ("layernorm.",) + self.later_layers("encoder.layer.", self.backbone.config.num_hidden_layers)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        p = self.patch_stride()
        patches = flattened_patches(pixels, p)
        out = self.backbone.encoder(self.embed(patches, pixels.shape[-1] // p), attention_mask=None,
                                    output_hidden_states=self.config.feature_layer != -1)
        h = self.hidden_state(out, self.backbone.layernorm(out.last_hidden_state) if self.config.feature_layer == -1 else None)
        return tokens_to_map(h)
