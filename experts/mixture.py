"""VisionMixture: N experts on one image batch, fused into one visual-token sequence."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from experts.base import VisionExpert
from experts.config import ExpertConfig
from experts.errors import ExpertConfigError
from experts.registry import build_expert, build_fusion

logger = logging.getLogger(__name__)


class VisionMixture(nn.Module):
    def __init__(self, experts: list[VisionExpert], fusion_name: str = "channel_concat",
                 fusion_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not experts:
            raise ExpertConfigError("a vision mixture needs at least one expert")
        grids = {e.config.name: e.grid for e in experts}
        if len(set(grids.values())) != 1:
            raise ExpertConfigError(
                "all experts of a mixture must share one grid; got "
                + ", ".join(f"{n}={g}x{g}" for n, g in grids.items()))
        self.experts = nn.ModuleList(experts)
        self.grid = experts[0].grid
        self.fusion = build_fusion(fusion_name, [e.out_dim for e in experts], self.grid * self.grid,
                                   **(fusion_options or {}))
        self.fusion_name = fusion_name

    @property
    def out_dim(self) -> int:
        return self.fusion.out_dim

    @property
    def num_tokens(self) -> int:
        return self.fusion.out_tokens

    def expert_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each expert's tokens [B, grid*grid, out_dim], before fusion."""
        return [expert(images) for expert in self.experts]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.expert_features(images))

    def set_expert_trainable(self, index: int, flag: bool) -> None:
        if not -len(self.experts) <= index < len(self.experts):
            raise IndexError(f"expert index {index} out of range for a mixture of {len(self.experts)}")
        self.experts[index].set_trainable(flag)

    def set_experts_trainable(self, flag: bool) -> None:
        for expert in self.experts:
            expert.set_trainable(flag)


def build_mixture(cfgs: list[ExpertConfig | str], fusion_name: str = "channel_concat",
                  fusion_options: dict[str, Any] | None = None) -> VisionMixture:
    return VisionMixture([build_expert(c) for c in cfgs], fusion_name, fusion_options)
