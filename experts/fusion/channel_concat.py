"""Channel concatenation (the Eagle paper's winner: best accuracy and cheapest): the experts'
aligned token grids are concatenated along channels, no parameters."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Fusion, FusionOptions


class ChannelConcat(Fusion):
    """out_tokens = num_tokens, out_dim = sum(in_dims); exactly torch.cat(feats, dim=-1)."""

    name = "channel_concat"
    Options = FusionOptions

    def __init__(self, in_dims: list[int], num_tokens: int, **options) -> None:
        super().__init__(in_dims, num_tokens, **options)
        self.out_dim = sum(self.in_dims)

    def fuse(self, feats: list[Tensor]) -> Tensor:
        return torch.cat(feats, dim=-1)
