"""Search strategies: greedy round-robin expert selection, grid ablations, sampler (TPE) search."""
from __future__ import annotations

from typing import Callable

from experts.errors import UnknownNameError
from experts.lookup import Registry
from explorer.strategies.base import Plan, Planned, Status, Strategy
from explorer.strategies.greedy import Greedy
from explorer.strategies.grid import Grid
from explorer.strategies.tpe import SAMPLERS, TPE, build_sampler
from explorer.study.spec import StudyError, StudySpec

STRATEGIES: Registry[Callable[[StudySpec], Strategy]] = Registry("strategy")
for _name, _cls in (("greedy", Greedy), ("grid", Grid), ("tpe", TPE)):
    STRATEGIES.register(_name, _cls)


def build_strategy(spec: StudySpec) -> Strategy:
    try:
        cls = STRATEGIES.get(spec.strategy.type)
    except UnknownNameError as err:
        raise StudyError(f"{spec.source}: strategy.type: {err}") from None
    return cls(spec)


__all__ = ["Plan", "Planned", "Status", "Strategy", "Greedy", "Grid", "TPE", "SAMPLERS", "STRATEGIES",
           "build_sampler", "build_strategy"]
