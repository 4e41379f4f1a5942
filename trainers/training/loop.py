"""The training loop, once, for every distributed strategy: deterministic global batches, gradient
accumulation, warmup + cosine schedule, metrics, checkpoints and exact resume. A strategy
(trainers/training/: DDP, DeepSpeed ZeRO) supplies only setup/backward/step/save/load/gathered."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from trainers.training import distributed as D
from trainers.training import preempt
from trainers.training.checkpoint import latest_step
from trainers.training.distributed import DistEnv
from trainers.training.loader import LoaderOptions, StepBatchSampler, stage_batches
from trainers.training.metrics import MetricsWriter
from trainers.spec import StageSpec

logger = logging.getLogger(__name__)


class BatchSplitError(ValueError):
    """global_batch_size cannot be split into micro batches over the processes."""


def accumulation_steps(hp: StageSpec, world_size: int, stage: str = "stage") -> int:
    per_step = hp.micro_batch_size * world_size
    if hp.global_batch_size % per_step:
        raise BatchSplitError(f"train.stages.{stage}: global_batch_size {hp.global_batch_size} is not a multiple of "
                              f"micro_batch_size {hp.micro_batch_size} x {world_size} processes")
    return hp.global_batch_size // per_step


def total_steps(hp: StageSpec, n_items: int, stage: str = "stage") -> int:
    per_epoch = n_items // hp.global_batch_size
    if per_epoch == 0:
        raise BatchSplitError(f"train.stages.{stage}: {n_items} examples are fewer than one global batch "
                              f"({hp.global_batch_size})")
    steps = max(1, math.ceil(hp.epochs * per_epoch))
    return min(steps, hp.max_steps) if hp.max_steps else steps


def warmup_cosine(optimizer, total: int, warmup_ratio: float):
    """transformers' cosine schedule with ceil(ratio * total) linear warmup steps: the schedule the
    HF Trainer (so LLaVA's and the paper's recipe) uses with warmup_ratio."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total), total)


def rank_seed(seed: int, rank: int, tag: str) -> int:
    """Seed of this rank's dropout/drop-path stream in stage `tag`: differs per rank (so ranks do not
    drop the same units) and per stage, and does not depend on what ran before."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{rank}:{tag}".encode()).digest()[:8], "little") >> 1


@dataclass
class ParamGroup:
    name: str  # "llm", "projector", "vision"
    params: list[nn.Parameter]
    lr: float
    no_decay: list[nn.Parameter] = field(default_factory=list)  # norms, biases, embeddings of the group


@dataclass
class StageJob:
    tag: str  # unique within a trial: "pretrain", "align_expert/0", ...
    stage: str  # the StageName
    model: nn.Module
    groups: list[ParamGroup]
    dataset: Any
    collate_fn: Callable
    hp: StageSpec
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    on_step: Callable[[int, int], None] | None = None  # (done, total) after each optimizer step, every rank
    loader: LoaderOptions = field(default_factory=LoaderOptions)


@dataclass
class StageResult:
    steps: int
    time_s: float
    samples_per_s: float
    tokens_per_s: float
    first_loss: float
    last_loss: float
    resumed_from: int | None = None
    full_steps: int = 0  # the stage's planned steps (more than `steps` when it stopped at a rung)


def optimizer_groups(job: StageJob, weight_decay: float) -> list[dict]:
    """Named groups with the stage's lr; norms, biases and embeddings get no weight decay."""
    groups = []
    for g in job.groups:
        skip = {id(p) for p in g.no_decay}
        decay = [p for p in g.params if id(p) not in skip]
        plain = [p for p in g.params if id(p) in skip]
        if decay:
            groups.append({"params": decay, "lr": g.lr, "name": g.name, "weight_decay": weight_decay})
        if plain:
            groups.append({"params": plain, "lr": g.lr, "name": f"{g.name}/no_decay", "weight_decay": 0.0})
    if not groups:
        raise ValueError(f"stage {job.tag}: nothing to train (every parameter is frozen)")
    return groups


class Engine(ABC):
    """Runs StageJobs for one trial: `run(job, ckpt_dir)` trains and returns a StageResult.
    Subclasses implement the strategy hooks; trainers.training.engines.make_engine picks one by the
    spec's `train.strategy` name."""

    name = ""

    def __init__(self, env: DistEnv, metrics: MetricsWriter, *, seed: int, checkpoint_every: int,
                 bf16: bool, strategy: str = "") -> None:
        self.strategy = strategy or self.name
        self.env, self.metrics = env, metrics
        self.seed, self.checkpoint_every, self.bf16 = seed, checkpoint_every, bf16
        self.stop_after: int | None = None  # tests: simulate a crash after this many steps
        self.stop_at: int | None = None  # a rung (trainers/stages/fidelity.py): end the stage here, checkpointed
        self.preempt_dir: Path | None = None  # the trial directory whose request file means "stop"
        self.last_module: nn.Module | None = None  # the trained module, on the device (evaluation uses it)

    # ----- strategy hooks -----
    @abstractmethod
    def setup(self, job: StageJob, accum: int, steps: int) -> nn.Module:
        """Move/wrap the model, build optimizer and schedule; returns the module to call."""

    @abstractmethod
    def backward(self, wrapped: nn.Module, batch: dict, last_micro: bool, accum: int) -> torch.Tensor:
        """Forward + backward of one micro batch; returns the (unscaled, detached) loss."""

    @abstractmethod
    def step(self, job: StageJob) -> None:
        """End of an optimizer step: clip, update, schedule, zero grads (where the strategy does not)."""

    @abstractmethod
    def save(self, ckpt_dir: Path, step: int, job: StageJob) -> None:
        """A complete checkpoint of the stage at `step` (every rank calls it)."""

    @abstractmethod
    def load(self, ckpt_dir: Path, job: StageJob) -> int:
        """Restore the newest complete checkpoint; returns its step."""

    @abstractmethod
    def gathered(self, model: nn.Module) -> AbstractContextManager:
        """Whole parameters readable inside the context (ZeRO-3 gathers; others: nothing to do)."""

    def lr_groups(self) -> dict[str, float]:
        """The current lr per named group (its no-decay half has the same lr). Subclasses set self.opt."""
        out: dict[str, float] = {}
        for g in self.opt.param_groups:
            out.setdefault(g["name"].split("/")[0], g["lr"])
        return out

    def build_context(self) -> AbstractContextManager:
        """Where a stage's model is loaded from disk (ZeRO-3: built partitioned); nothing by default."""
        return nullcontext()

    def partition(self, module: nn.Module) -> nn.Module:
        """A part built whole (random init, or an expert read from disk) handed to the strategy as soon
        as it exists (ZeRO-3: partitioned now, so at most one part is ever whole); default: as it is."""
        return module

    def first_build(self, make: Callable[[], nn.Module], write: Callable[[nn.Module, Path], Any],
                    read: Callable[[Path], nn.Module], scratch: Path | None) -> nn.Module:
        """A part with no weights on disk yet (a random init, an expert's first read of its hub
        weights): `make()` builds it, `write(part, dir)` and `read(dir)` round-trip it through
        `scratch` where the strategy builds it once (ZeRO-3); default: made here and partitioned."""
        return self.partition(make())

    def release(self) -> None:
        """Drop references to this stage's optimizer/engine so the next stage starts from free memory."""

    # ----- the loop -----
    def run(self, job: StageJob, ckpt_dir: str | Path) -> StageResult:
        env, hp = self.env, job.hp
        accum = accumulation_steps(hp, env.world_size, job.stage)
        steps = total_steps(hp, len(job.dataset), job.stage)
        torch.manual_seed(rank_seed(self.seed, env.rank, job.tag))  # dropout differs per rank; data order is global
        wrapped = self.setup(job, accum, steps)
        ckpt_dir = Path(ckpt_dir)
        start = 0
        if latest_step(ckpt_dir) is not None:
            start = self.load(ckpt_dir, job)
            self.metrics.truncate_after(job.tag, start)
        lengths = job.dataset.lengths if job.loader.group_by_length else None
        sampler = StepBatchSampler(len(job.dataset), hp, env, accum=accum, seed=self.seed, start=start, steps=steps, lengths=lengths)
        batches = stage_batches(job.dataset, job.collate_fn, sampler, options=job.loader, seed=self.seed, device=env.device)
        losses: list[float] = []
        samples = tokens = 0.0
        t_stage = time.perf_counter()
        wrapped.train()
        end = min(steps, self.stop_at) if self.stop_at else steps
        for step in range(start, end):
            t0 = time.perf_counter()
            loss_sum, tok = 0.0, 0
            for i in range(accum):
                batch = next(batches)
                tok += batch["num_tokens"]  # counted on the host by the collate: no device sync
                loss_sum = loss_sum + self.backward(wrapped, batch, i == accum - 1, accum)  # read once per step
            self.step(job)
            lr_groups = self.lr_groups()
            lr = lr_groups.get("projector", next(iter(lr_groups.values())))
            # the pre-emption vote rides on the step's one reduction: every rank stops at the same step
            total_loss, total_tok, stop_votes = D.all_reduce_values(
                [float(loss_sum) / accum, float(tok), float(preempt.requested(self.preempt_dir))])
            dt = time.perf_counter() - t0
            mean_loss = total_loss / env.world_size
            losses.append(mean_loss)
            samples += hp.global_batch_size
            tokens += total_tok
            self.metrics.write({"step": step + 1, "stage": job.stage, "tag": job.tag, "loss": mean_loss,
                                "lr": lr, "lr_groups": lr_groups, "samples_per_s": hp.global_batch_size / dt,
                                "tokens_per_s": total_tok / dt, **job.extra_metrics})
            done = step + 1
            stop = stop_votes > 0 and done < steps
            if (done % self.checkpoint_every == 0 or stop or done == end) and done < steps:
                self.save(ckpt_dir, done, job)
            if stop:
                raise preempt.Preempted(job.tag, done)
            if job.on_step is not None:
                job.on_step(done, steps)
                wrapped.train()
            if self.stop_after is not None and done >= self.stop_after:
                raise SystemExit(f"stop_after={self.stop_after} reached (test hook)")
        elapsed = time.perf_counter() - t_stage
        ran = max(end - start, 0)
        return StageResult(steps=max(end, start), time_s=elapsed, samples_per_s=samples / elapsed if ran else 0.0,
                           tokens_per_s=tokens / elapsed if ran else 0.0,
                           first_loss=losses[0] if losses else float("nan"),
                           last_loss=losses[-1] if losses else float("nan"),
                           resumed_from=start or None, full_steps=steps)
