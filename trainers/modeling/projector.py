"""Vision-to-language projectors (LLaVA-1.5's mlp2x_gelu and a linear map)."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn


class UnknownProjectorError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


def _mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


PROJECTORS: dict[str, Callable[[int, int], nn.Module]] = {"linear": _linear, "mlp2x_gelu": _mlp2x_gelu}


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind not in PROJECTORS:
        raise UnknownProjectorError(f"unknown projector {kind!r}; known: {', '.join(sorted(PROJECTORS))}")
    if in_dim <= 0 or out_dim <= 0:
        raise ValueError(f"projector {kind!r}: dims must be positive, got in={in_dim} out={out_dim}")
    return PROJECTORS[kind](in_dim, out_dim)
