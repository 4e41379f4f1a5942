"""What a stage may use of its trial process: the StageContext that trainers.stages.runner.TrialRunner
implements. Stages type against it and never import the runner."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from trainers.spec import TrialSpec
from trainers.stages.recipes import TrialData
from trainers.training.distributed import DistEnv
from trainers.training.loop import Engine, StageJob, StageResult
from trainers.training.metrics import MetricsWriter


class StageContext(Protocol):
    spec: TrialSpec
    out: Path  # the trial directory
    env: DistEnv
    cache_dir: Path
    data: TrialData
    bf16: bool
    dtype: torch.dtype  # weights are built and loaded in it
    engine: Engine
    metrics: MetricsWriter

    def dataset(self, path: Path, template: str, tokenizer=None, subset: bool = True):
        """A stage's LlavaDataset (the trial tokenizer unless one is given; data.fraction unless not `subset`)."""

    def stage1_tokenizer(self):
        """The tokenizer of the pre-alignment LLM."""

    def stage1_key(self, cfg) -> str:
        """The stage-1 cache key of one expert."""

    def train(self, job: StageJob) -> StageResult:
        """Run one stage's training loop (resumes from its checkpoints)."""

    def free(self) -> None:
        """Drop the finished stage's engine state and model."""

    def write_done(self, tag: str, info: dict[str, Any]) -> None:
        """Mark a stage done (rank 0 writes, every rank waits)."""
