"""One training loop for DDP and DeepSpeed ZeRO-2/3: deterministic global batches, gradient
accumulation, cosine schedule with warmup, grad clipping, metrics, checkpoints and resume."""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from trainers.checkpoint import latest_step, load_checkpoint, save_checkpoint
from trainers.loader import LoaderOptions, StepBatchSampler, stage_batches
from trainers.metrics import MetricsWriter
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


def cosine_with_warmup(total: int, warmup_ratio: float) -> Callable[[int], float]:
    warm = math.ceil(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(strategy: str) -> DistEnv:
    """Process group from torchrun's env (gloo on CPU, NCCL on GPU); single process without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", local) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    if "MASTER_ADDR" in os.environ and not dist.is_initialized():
        backend = "nccl" if on_gpu else "gloo"
        if strategy.startswith("deepspeed"):
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend=backend)
    return DistEnv(rank, world, local, device)


@dataclass
class ParamGroup:
    name: str  # "llm", "projector", "vision"
    params: list[nn.Parameter]
    lr: float


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


def _allreduce_sum(values: list[float], env: DistEnv) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if env.world_size > 1 and dist.is_initialized():
        if env.device.type == "cuda":
            t = t.to(env.device)
        dist.all_reduce(t)
    return t.cpu().tolist()


class Engine:
    """Runs StageJobs for one trial: `run(job, ckpt_dir)` trains and returns a StageResult."""

    def __init__(self, strategy: str, env: DistEnv, metrics: MetricsWriter, seed: int,
                 checkpoint_every: int, bf16: bool) -> None:
        self.strategy, self.env, self.metrics = strategy, env, metrics
        self.seed, self.checkpoint_every, self.bf16 = seed, checkpoint_every, bf16
        self.stop_after: int | None = None  # tests: simulate a crash after this many steps
        self.last_module: nn.Module | None = None  # what evaluation calls forward on (DeepSpeed: engine.module)

    def _optimizer_groups(self, job: StageJob) -> list[dict]:
        groups = [{"params": g.params, "lr": g.lr, "name": g.name} for g in job.groups if g.params]
        if not groups:
            raise ValueError(f"stage {job.tag}: nothing to train (every parameter is frozen)")
        return groups

    def _wrap(self, job: StageJob, accum: int, steps: int):
        model = job.model.to(self.env.device)
        groups = self._optimizer_groups(job)
        factor = cosine_with_warmup(steps, job.hp.warmup_ratio)
        if self.strategy.startswith("deepspeed"):
            import deepspeed

            from trainers.dsconfig import deepspeed_config

            cfg = deepspeed_config(self.strategy, job.hp, self.env.world_size, accum, self.bf16,
                                   self.env.device.type == "cuda")
            engine, opt, _, sched = deepspeed.initialize(
                model=model, model_parameters=groups, config=cfg,
                lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, factor))
            return engine, engine, opt, sched
        opt = torch.optim.AdamW(groups, lr=job.hp.lr, weight_decay=job.hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        wrapped = model
        if self.env.world_size > 1:
            ids = [self.env.device.index] if self.env.device.type == "cuda" else None
            # vision experts can hold parameters their selected feature layer never reaches
            unused = any(g.name == "vision" for g in job.groups)
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
        return wrapped, None, opt, sched

    def run(self, job: StageJob, ckpt_dir: str | Path) -> StageResult:
        env, hp = self.env, job.hp
        accum = accumulation_steps(hp, env.world_size, job.stage)
        steps = total_steps(hp, len(job.dataset), job.stage)
        wrapped, ds, opt, sched = self._wrap(job, accum, steps)
        self.last_module = ds.module if ds is not None else job.model
        core = job.model
        ckpt_dir = Path(ckpt_dir)
        start = 0
        if latest_step(ckpt_dir) is not None:
            start = int(load_checkpoint(ckpt_dir, core, opt, sched, ds_engine=ds)["step"])
            self.metrics.truncate_after(job.tag, start)
        params = [p for g in job.groups for p in g.params]
        autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=self.bf16 and ds is None)
        lengths = job.dataset.lengths if job.loader.group_by_length else None
        sampler = StepBatchSampler(len(job.dataset), hp, env, accum, self.seed, start, steps, lengths)
        batches = stage_batches(job.dataset, job.collate_fn, sampler, job.loader, self.seed, env.device)
        losses: list[float] = []
        samples = tokens = 0.0
        t_stage = time.perf_counter()
        wrapped.train()
        for step in range(start, steps):
            t0 = time.perf_counter()
            loss_sum, tok = 0.0, 0
            for i in range(accum):
                batch = next(batches)
                tok += batch["num_tokens"]  # counted on the host by the collate: no device sync
                last = i == accum - 1
                if ds is not None:
                    loss = ds(**batch).loss
                    ds.backward(loss)
                    ds.step()
                else:
                    sync = wrapped.no_sync() if (env.world_size > 1 and not last) else nullcontext()
                    with sync, autocast:
                        loss = wrapped(**batch).loss
                    (loss / accum).backward()
                loss_sum = loss_sum + loss.detach()  # read once per step, at logging
            if ds is None:
                torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            lr_groups = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}
            lr = lr_groups.get("projector", next(iter(lr_groups.values())))
            total_loss, total_tok = _allreduce_sum([float(loss_sum) / accum, float(tok)], env)
            dt = time.perf_counter() - t0
            mean_loss = total_loss / env.world_size
            losses.append(mean_loss)
            samples += hp.global_batch_size
            tokens += total_tok
            self.metrics.write({"step": step + 1, "stage": job.stage, "tag": job.tag, "loss": mean_loss,
                                "lr": lr, "lr_groups": lr_groups, "samples_per_s": hp.global_batch_size / dt,
                                "tokens_per_s": total_tok / dt, **job.extra_metrics})
            done = step + 1
            if done % self.checkpoint_every == 0 and done < steps:
                save_checkpoint(ckpt_dir, done, core, opt, sched, env.rank, ds_engine=ds)
            if job.on_step is not None:
                job.on_step(done, steps)
                wrapped.train()
            if self.stop_after is not None and done >= self.stop_after:
                raise SystemExit(f"stop_after={self.stop_after} reached (test hook)")
        elapsed = time.perf_counter() - t_stage
        ran = steps - start
        return StageResult(steps=steps, time_s=elapsed, samples_per_s=samples / elapsed if ran else 0.0,
                           tokens_per_s=tokens / elapsed if ran else 0.0,
                           first_loss=losses[0] if losses else float("nan"),
                           last_loss=losses[-1] if losses else float("nan"),
                           resumed_from=start or None)

