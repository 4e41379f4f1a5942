"""Distributed strategies by name (the spec's train.strategy): each an Engine subclass."""
from __future__ import annotations

from trainers.training.loop import Engine


def _registry() -> dict[str, type[Engine]]:
    from trainers.training.ddp import DDPEngine
    from trainers.training.zero import DeepSpeedEngine

    return {"ddp": DDPEngine, "deepspeed_zero2": DeepSpeedEngine, "deepspeed_zero3": DeepSpeedEngine}


def get_strategy(name: str) -> type[Engine]:
    known = _registry()
    if name not in known:
        raise KeyError(f"unknown training strategy {name!r}; known: {', '.join(known)}")
    return known[name]
