"""Common base of the fusion strategies: argument checks, pydantic options, grid helpers, cost."""
from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class FusionError(ValueError):
    """A bad fusion construction argument or a bad forward input (one-line message)."""


class FusionOptions(BaseModel):
    """Per-strategy options; subclasses add fields. Unknown options are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _format_validation_error(fusion: str, options_cls: type[FusionOptions], err: ValidationError) -> str:
    known = ", ".join(options_cls.model_fields) or "none"
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "options"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown option {loc!r} (known options: {known})")
        else:
            parts.append(f"option {loc!r}={e.get('input')!r}: {e['msg']}")
    return f"fusion {fusion!r}: " + "; ".join(parts)


class Fusion(nn.Module):
    """Fuses per-expert token features `[B, num_tokens, in_dims[i]]` into `[B, out_tokens, out_dim]`.

    Subclasses set `name` and `Options`, call `super().__init__(in_dims, num_tokens, **options)`
    (after which `self.options`, `self.grid` are set), set `out_dim`/`out_tokens` and implement
    `fuse(feats)`; `forward` checks the inputs first.
    """

    name: ClassVar[str] = "fusion"
    Options: ClassVar[type[FusionOptions]] = FusionOptions

    def __init__(self, in_dims: list[int], num_tokens: int, **options: Any) -> None:
        super().__init__()
        if isinstance(in_dims, (int, str)) or not hasattr(in_dims, "__len__") or len(in_dims) == 0:
            raise FusionError(f"fusion {self.name!r}: in_dims must be a non-empty list of widths, got {in_dims!r}")
        dims = list(in_dims)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise FusionError(f"fusion {self.name!r}: in_dims must be positive ints, got {dims!r}")
        if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or num_tokens <= 0:
            raise FusionError(f"fusion {self.name!r}: num_tokens must be a positive int, got {num_tokens!r}")
        grid = math.isqrt(num_tokens)
        if grid * grid != num_tokens:
            raise FusionError(f"fusion {self.name!r}: num_tokens={num_tokens} is not a square (grid*grid tokens)")
        try:
            self.options = self.Options(**options)
        except ValidationError as err:
            raise FusionError(_format_validation_error(self.name, self.Options, err)) from None
        self.in_dims: list[int] = dims
        self.num_tokens = num_tokens
        self.grid = grid
        self.out_dim: int = 0
        self.out_tokens: int = num_tokens
        logger.debug("fusion %s: in_dims=%s num_tokens=%d options=%s", self.name, dims, num_tokens, self.options)

    @property
    def num_experts(self) -> int:
        return len(self.in_dims)

    def check_inputs(self, feats: list[Tensor]) -> None:
        """Raise a one-line FusionError when `feats` do not match in_dims / num_tokens."""
        if isinstance(feats, Tensor) or not isinstance(feats, (list, tuple)):
            raise FusionError(f"fusion {self.name!r}: expected a list of {self.num_experts} tensors, got {type(feats).__name__}")
        if len(feats) != self.num_experts:
            raise FusionError(f"fusion {self.name!r}: expected {self.num_experts} expert features, got {len(feats)}")
        batch = None
        for i, (x, d) in enumerate(zip(feats, self.in_dims)):
            if not isinstance(x, Tensor) or x.dim() != 3:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise FusionError(f"fusion {self.name!r}: expert {i} features must be [B, {self.num_tokens}, {d}], got {shape}")
            if x.shape[1] != self.num_tokens or x.shape[2] != d:
                raise FusionError(
                    f"fusion {self.name!r}: expert {i} features must be [B, {self.num_tokens}, {d}], got {tuple(x.shape)}"
                )
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise FusionError(f"fusion {self.name!r}: expert {i} has batch {x.shape[0]}, expert 0 has {batch}")

    def forward(self, feats: list[Tensor]) -> Tensor:
        self.check_inputs(feats)
        return self.fuse(list(feats))

    def fuse(self, feats: list[Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, num_tokens={self.num_tokens}, out=[{self.out_tokens}, {self.out_dim}], {self.options!r}"


def tokens_to_grid(x: Tensor, grid: int) -> Tensor:
    """[B, grid*grid, C] (row-major) -> [B, C, grid, grid]."""
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, grid, grid)


def grid_to_tokens(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H*W, C] (row-major)."""
    return x.flatten(2).transpose(1, 2)


def fusion_cost(cls: type[Fusion], in_dims: list[int], num_tokens: int, batch: int = 1, **options: Any) -> dict[str, float]:
    """Parameter count and forward FLOPs (matmuls/convs, counted by torch) for one batch, built on
    the meta device so full-size settings cost no memory."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        fusion = cls(in_dims, num_tokens, **options)
        feats = [torch.empty(batch, num_tokens, d) for d in in_dims]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = fusion(feats)
    return {
        "params": sum(p.numel() for p in fusion.parameters()),
        "flops": counter.get_total_flops(),
        "out_tokens": out.shape[1],
        "out_dim": out.shape[2],
    }
