"""Multi-scale deformable attention (Deformable-DETR style, pure PyTorch; compared in Eagle): each
expert is one level, the first expert's tokens query learned sampling points on every level."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import Fusion, FusionError, FusionOptions, tokens_to_grid


class DeformableOptions(FusionOptions):
    dim: int | None = Field(default=None, gt=0)  # attention width; None -> in_dims[0]
    heads: int = Field(default=8, gt=0)  # must divide dim
    points: int = Field(default=4, gt=0)  # sampling points per head per level


def ms_deform_sample(values: list[Tensor], locations: Tensor, weights: Tensor) -> Tensor:
    """Weighted bilinear sampling of several value maps.

    values: per level `[B, heads, dh, H_l, W_l]`; locations: `[B, Q, heads, L, P, 2]` as (x, y) in
    [0, 1] (pixel centres at (i + 0.5) / size); weights: `[B, Q, heads, L, P]`.
    Returns `[B, Q, heads * dh]`; points outside the map read zeros.
    """
    b, q, h, n_levels, p, _ = locations.shape
    grids = (2 * locations - 1).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)  # [B*h, Q, L, P, 2]
    sampled = []
    for level, v in enumerate(values):
        sampled.append(
            F.grid_sample(v.flatten(0, 1), grids[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # [B*h, dh, Q, P]
    stacked = torch.stack(sampled, dim=3)  # [B*h, dh, Q, L, P]
    w = weights.permute(0, 2, 1, 3, 4).flatten(0, 1).unsqueeze(1)  # [B*h, 1, Q, L, P]
    out = (stacked * w).sum(dim=(3, 4))  # [B*h, dh, Q]
    return out.view(b, h, -1, q).permute(0, 3, 1, 2).flatten(2)


class Deformable(Fusion):
    """out = q + W_o(sum_{l,p} softmax(A q)_{l,p} * V_l(ref + offset_{l,p}(q))) per head, q = W_q(expert 0)."""

    name = "deformable"
    Options = DeformableOptions

    def __init__(self, in_dims: list[int], num_tokens: int, **options) -> None:
        super().__init__(in_dims, num_tokens, **options)
        dim = self.options.dim or self.in_dims[0]
        heads, points, levels = self.options.heads, self.options.points, self.num_experts
        if dim % heads:
            raise FusionError(f"fusion {self.name!r}: option 'heads'={heads} does not divide dim={dim}")
        self.out_dim = dim
        self.out_tokens = num_tokens
        self.query_proj = nn.Linear(self.in_dims[0], dim)
        self.value_proj = nn.ModuleList(nn.Linear(d, dim) for d in self.in_dims)  # one level per expert
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.output_proj = nn.Linear(dim, dim)
        g = self.grid
        centres = (torch.arange(g, dtype=torch.float32) + 0.5) / g
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("reference_points", torch.stack([xs, ys], dim=-1).reshape(-1, 2), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Offsets start as a regular star (one direction per head, point k at k+1 pixels) and
        attention uniform, as in Deformable-DETR, so sampling is spread out from step 0."""
        if self.sampling_offsets.bias.numel() == 0:  # built as empty ZeRO-3 partitions: read from disk next
            return
        heads, levels, points = self.options.heads, self.num_experts, self.options.points
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(heads, dtype=torch.float32) * (2 * math.pi / heads)
        pattern = torch.stack([theta.cos(), theta.sin()], dim=-1)
        pattern = pattern / pattern.abs().max(dim=-1, keepdim=True).values
        pattern = pattern.view(heads, 1, 1, 2).repeat(1, levels, points, 1)
        pattern = pattern * torch.arange(1, points + 1, dtype=torch.float32).view(1, 1, points, 1)
        self.sampling_offsets.bias.copy_(pattern.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in [*self.value_proj, self.output_proj]:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def fuse(self, feats: list[Tensor]) -> Tensor:
        heads, levels, points, g = self.options.heads, self.num_experts, self.options.points, self.grid
        q = self.query_proj(feats[0])  # [B, T, dim]
        b, t, _ = q.shape
        values = [tokens_to_grid(proj(x), g).unflatten(1, (heads, -1)) for proj, x in zip(self.value_proj, feats)]
        offsets = self.sampling_offsets(q).view(b, t, heads, levels, points, 2)
        weights = self.attention_weights(q).view(b, t, heads, levels * points).softmax(-1)
        sizes = torch.tensor([[g, g]] * levels, dtype=q.dtype, device=q.device)  # (W_l, H_l); offsets are in pixels
        locations = self.reference_points.to(q.dtype)[None, :, None, None, None, :] + offsets / sizes[None, None, None, :, None, :]
        sampled = ms_deform_sample(values, locations, weights.view(b, t, heads, levels, points))
        return q + self.output_proj(sampled)
