"""DDP (and one process): torch AdamW with fp32 trainable weights, bf16 autocast when training
bf16 (frozen parts stay in bf16), no_sync during accumulation, global-norm clipping."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn

from trainers.training.checkpoint import load_checkpoint, save_checkpoint
from trainers.training.loop import Engine, StageJob, optimizer_groups, warmup_cosine


class DDPEngine(Engine):
    name = "ddp"

    def setup(self, job: StageJob, accum: int, steps: int) -> nn.Module:
        env = self.env
        model = job.model.to(env.device)
        self.params = [p for g in job.groups for p in g.params]
        for p in self.params:  # master weights of what trains are fp32; frozen weights keep their dtype
            p.data = p.data.float()
        self.opt = torch.optim.AdamW(optimizer_groups(job, job.hp.weight_decay), lr=job.hp.lr)
        self.sched = warmup_cosine(self.opt, steps, job.hp.warmup_ratio)
        self.autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        wrapped = model
        if env.world_size > 1:
            ids = [env.device.index] if env.device.type == "cuda" else None
            # vision experts can hold parameters their selected feature layer never reaches
            unused = any(g.name == "vision" for g in job.groups)
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
        self.last_module = job.model
        return wrapped

    def backward(self, wrapped: nn.Module, batch: dict, last_micro: bool, accum: int) -> torch.Tensor:
        sync = wrapped.no_sync() if (self.env.world_size > 1 and not last_micro) else nullcontext()
        with sync, self.autocast:
            loss = wrapped(**batch).loss
        (loss / accum).backward()
        return loss.detach()

    def step(self, job: StageJob) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, job.hp.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)

    def save(self, ckpt_dir: Path, step: int, job: StageJob) -> None:
        save_checkpoint(ckpt_dir, step, job.model, optimizer=self.opt, scheduler=self.sched, rank=self.env.rank)

    def load(self, ckpt_dir: Path, job: StageJob) -> int:
        return int(load_checkpoint(ckpt_dir, job.model, self.opt, self.sched, self.env.rank)["step"])

    def gathered(self, model: nn.Module) -> AbstractContextManager:
        return nullcontext()

    def release(self) -> None:
        self.opt = self.sched = None
        self.params = []
