"""Sequence append (Eagle's baseline: n*T tokens, costliest in LLM tokens): each expert is linearly
projected to a common width, then the token sequences are concatenated."""
from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from .base import Fusion, FusionOptions


class SequenceAppendOptions(FusionOptions):
    dim: int | None = Field(default=None, gt=0)  # common width; None -> max(in_dims)


class SequenceAppend(Fusion):
    """out_tokens = n * num_tokens, out_dim = dim; expert i's tokens occupy block i."""

    name = "sequence_append"
    Options = SequenceAppendOptions

    def __init__(self, in_dims: list[int], num_tokens: int, **options) -> None:
        super().__init__(in_dims, num_tokens, **options)
        self.out_dim = self.options.dim or max(self.in_dims)
        self.out_tokens = self.num_experts * num_tokens
        self.proj = nn.ModuleList(nn.Linear(d, self.out_dim) for d in self.in_dims)

    def fuse(self, feats: list[Tensor]) -> Tensor:
        return torch.cat([p(x) for p, x in zip(self.proj, feats)], dim=1)
