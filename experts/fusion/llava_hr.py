"""LLaVA-HR mixture-of-resolution adapter (compared in Eagle; keeps T tokens and the main expert's
width): every other expert is conv-adapted on the 2-D grid and added to the main (first) expert
through a gate computed from pooled features."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from .base import Fusion, FusionOptions, grid_to_tokens, tokens_to_grid


class LlavaHROptions(FusionOptions):
    kernel_size: int = Field(default=3, gt=0)  # conv adapter kernel on the token grid (odd)
    gate: Literal["tanh", "sigmoid"] = "tanh"
    gate_hidden: int | None = Field(default=None, gt=0)  # gate MLP width; None -> in_dims[0] // 2

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd so the adapted grid stays aligned with the main grid")
        return v


class _MRAdapter(nn.Module):
    """One side branch: conv adapter to the main width plus its gate MLP."""

    def __init__(self, main_dim: int, side_dim: int, kernel_size: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(side_dim, main_dim, kernel_size, padding=kernel_size // 2),
            nn.GELU(),
            nn.Conv2d(main_dim, main_dim, 1),
        )
        # gate sees the pooled main and pooled adapted features, as the MR-adapter does
        self.gate = nn.Sequential(nn.Linear(2 * main_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


class LlavaHR(Fusion):
    """out = main + sum_i act(gate_i([pool(main), pool(a_i)])) * a_i, a_i = conv_adapter_i(expert_i)."""

    name = "llava_hr"
    Options = LlavaHROptions

    def __init__(self, in_dims: list[int], num_tokens: int, **options) -> None:
        super().__init__(in_dims, num_tokens, **options)
        main = self.in_dims[0]
        hidden = self.options.gate_hidden or max(1, main // 2)
        self.out_dim = main
        self.out_tokens = num_tokens
        self.adapters = nn.ModuleList(_MRAdapter(main, d, self.options.kernel_size, hidden) for d in self.in_dims[1:])
        self.gate_act = torch.tanh if self.options.gate == "tanh" else torch.sigmoid

    def fuse(self, feats: list[Tensor]) -> Tensor:
        main = feats[0]
        pooled_main = main.mean(dim=1)
        out = main
        for adapter, x in zip(self.adapters, feats[1:]):
            a = grid_to_tokens(adapter.conv(tokens_to_grid(x, self.grid)))
            g = self.gate_act(adapter.gate(torch.cat([pooled_main, a.mean(dim=1)], dim=-1)))  # [B, 1]
            out = out + g.unsqueeze(1) * a
        return out
