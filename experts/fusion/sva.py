"""Cambrian-1's Spatial Vision Aggregator (arXiv 2406.16860): a learnable grid of queries, each of
which attends only to its own spatial window in every expert's grid (the window of query (i, j)
is the (g/q) x (g/q) patch of tokens it covers), through `layers` stacked cross-attention blocks
with their own key/value projections. Keys carry a learnt within-window position. Output: q*q
tokens of width `dim` (Cambrian: 576 queries over four encoders). With the option `llm_layers`,
Cambrian's multi-layer aggregation is added too: at those LLM decoder layers the hidden states at
the visual tokens query the experts' windows again (experts.fusion.sva_layers; built by the model,
which knows the LLM's width)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from .base import Fusion, FusionError, FusionOptions


class SVAOptions(FusionOptions):
    query_grid: int | None = Field(default=None, gt=0)  # side of the query grid (None: the token grid)
    dim: int | None = Field(default=None, gt=0)  # width of the queries and output (None: widest expert)
    heads: int = Field(default=1, gt=0)
    layers: int = Field(default=1, gt=0)  # stacked aggregator blocks, each with its own keys/values
    llm_layers: tuple[int, ...] = ()  # LLM decoder layers (0-based) at which the visual tokens re-aggregate

    @field_validator("llm_layers")
    @classmethod
    def _layers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(i < 0 for i in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct decoder layer indices >= 0, got {list(v)}")
        return tuple(sorted(v))


def _heads(t: Tensor, h: int) -> Tensor:
    """[B, Q, L, dim] -> [B, Q, heads, L, dim/heads]."""
    return t.unflatten(-1, (h, -1)).transpose(2, 3)


def spatial_windows(x: Tensor, q: int, m: int) -> Tensor:
    """[B, (q*m)^2, d] -> [B, q*q, m*m, d]: the m x m tokens of a row-major grid each of q x q cells covers."""
    b, _, d = x.shape
    return x.reshape(b, q, m, q, m, d).permute(0, 1, 3, 2, 4, 5).reshape(b, q * q, m * m, d)


def window_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Each query [B, Q, dim] over its own keys/values [B, Q, L, dim] -> [B, Q, dim]."""
    att = F.scaled_dot_product_attention(_heads(q.unsqueeze(2), heads), _heads(k, heads), _heads(v, heads))
    return att.transpose(2, 3).flatten(3).squeeze(2)


class _Block(nn.Module):
    def __init__(self, in_dims: list[int], dim: int, window: int) -> None:
        super().__init__()
        # one key per query (one expert, window 1): softmax is 1, so no queries/keys to learn
        self.attends = len(in_dims) * window * window > 1
        self.kv_norm = nn.ModuleList(nn.LayerNorm(d) for d in in_dims)
        self.kv = nn.ModuleList(nn.Linear(d, (2 if self.attends else 1) * dim) for d in in_dims)
        if self.attends:
            self.key_pos = nn.Parameter(torch.zeros(len(in_dims), window * window, dim))
            self.q_norm = nn.LayerNorm(dim)
            self.q = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class SpatialVisionAggregator(Fusion):
    name = "sva"
    Options = SVAOptions

    def __init__(self, in_dims: list[int], num_tokens: int, **options) -> None:
        super().__init__(in_dims, num_tokens, **options)
        o = self.options
        self.query_grid = o.query_grid or self.grid
        if self.grid % self.query_grid:
            raise FusionError(f"fusion {self.name!r}: option 'query_grid'={self.query_grid} must divide the token grid {self.grid}")
        self.window = self.grid // self.query_grid
        self.out_dim = o.dim or max(self.in_dims)
        if self.out_dim % o.heads:
            raise FusionError(f"fusion {self.name!r}: option 'heads'={o.heads} does not divide the width {self.out_dim}")
        self.out_tokens = self.query_grid ** 2
        self.queries = nn.Parameter(torch.randn(self.out_tokens, self.out_dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(self.in_dims, self.out_dim, self.window) for _ in range(o.layers))

    def fuse(self, feats: list[Tensor]) -> Tensor:
        b, h = feats[0].shape[0], self.options.heads
        y = self.queries.to(feats[0].dtype).expand(b, -1, -1)
        for blk in self.blocks:
            if not blk.attends:
                y = y + blk.o(blk.kv[0](blk.kv_norm[0](feats[0])))
                y = y + blk.mlp(blk.mlp_norm(y))
                continue
            keys, values = [], []
            for i, (norm, kv, x) in enumerate(zip(blk.kv_norm, blk.kv, feats)):
                k, v = spatial_windows(kv(norm(x)), self.query_grid, self.window).chunk(2, dim=-1)
                keys.append(k + blk.key_pos[i])
                values.append(v)
            k, v = torch.cat(keys, dim=2), torch.cat(values, dim=2)  # [B, Q, n*m*m, dim]
            y = y + blk.o(window_attention(blk.q(blk.q_norm(y)), k, v, h))  # per query, its windows only
            y = y + blk.mlp(blk.mlp_norm(y))
        return y
