"""Search strategies: greedy round-robin expert selection, grid ablations, sampler (TPE) search."""
from __future__ import annotations

from typing import Callable

from explorer.strategies.base import Plan, Planned, Status, Strategy
from explorer.strategies.greedy import Greedy
from explorer.strategies.grid import Grid
from explorer.strategies.tpe import SAMPLERS, TPE, build_sampler
from explorer.study.spec import StudyError, StudySpec

STRATEGIES: dict[str, Callable[[StudySpec], Strategy]] = {"greedy": Greedy, "grid": Grid, "tpe": TPE}


def build_strategy(spec: StudySpec) -> Strategy:
    kind = spec.strategy.type
    if kind not in STRATEGIES:
        raise StudyError(f"{spec.source}: strategy.type: unknown strategy {kind!r} (known: {', '.join(STRATEGIES)})")
    return STRATEGIES[kind](spec)


__all__ = ["Plan", "Planned", "Status", "Strategy", "Greedy", "Grid", "TPE", "SAMPLERS", "STRATEGIES",
           "build_sampler", "build_strategy"]
