"""The training engines by name (the spec's `train.strategy`): each an Engine subclass."""
from __future__ import annotations

from experts.lookup import Registry
from trainers.training.ddp import DDPEngine
from trainers.training.distributed import DistEnv
from trainers.training.loop import Engine
from trainers.training.metrics import MetricsWriter
from trainers.training.zero import ZeroEngine

ENGINES: Registry[type[Engine]] = Registry("training strategy")
ENGINES.register("ddp", DDPEngine)
ENGINES.register("deepspeed_zero2", ZeroEngine)
ENGINES.register("deepspeed_zero3", ZeroEngine)


def get_engine(name: str) -> type[Engine]:
    return ENGINES.get(name)


def make_engine(strategy: str, env: DistEnv, metrics: MetricsWriter, *, seed: int, checkpoint_every: int,
                bf16: bool) -> Engine:
    return get_engine(strategy)(env, metrics, seed=seed, checkpoint_every=checkpoint_every, bf16=bf16,
                               strategy=strategy)
