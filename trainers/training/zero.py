"""DeepSpeed ZeRO-2/3: DeepSpeed's engine owns bf16, accumulation, clipping and the optimizer;
checkpoints are DeepSpeed's own (trainable parameters only) plus each rank's RNG state."""
from __future__ import annotations

import gc
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path

import torch
from torch import nn

from trainers.modeling.partitions import no_init_broadcast
from trainers.training import distributed as D
from trainers.training.checkpoint import finish, load_rng, newest, save_rng, step_dir
from trainers.training.dsconfig import deepspeed_config
from trainers.training.loop import Engine, StageJob, optimizer_groups, warmup_cosine

logger = logging.getLogger(__name__)


class ZeroEngine(Engine):
    name = "deepspeed_zero2"

    @property
    def zero3(self) -> bool:
        return self.strategy == "deepspeed_zero3"

    def setup(self, job: StageJob, accum: int, steps: int) -> nn.Module:
        import deepspeed

        cfg = deepspeed_config(self.strategy, job.hp, self.env.world_size, accum=accum, bf16=self.bf16,
                               on_gpu=self.env.device.type == "cuda")
        self.ds, self.opt, _, self.sched = deepspeed.initialize(
            model=job.model, model_parameters=optimizer_groups(job, job.hp.weight_decay), config=cfg,
            lr_scheduler=lambda o: warmup_cosine(o, steps, job.hp.warmup_ratio))
        self.last_module = self.ds.module
        return self.ds

    def backward(self, wrapped: nn.Module, batch: dict, last_micro: bool, accum: int) -> torch.Tensor:
        loss = self.ds(**batch).loss
        self.ds.backward(loss)
        self.ds.step()  # DeepSpeed steps the optimizer itself at the accumulation boundary
        return loss.detach()

    def step(self, job: StageJob) -> None:
        pass

    def save(self, ckpt_dir: Path, step: int, job: StageJob) -> None:
        final = step_dir(ckpt_dir, step)
        # frozen parameters are not in the checkpoint: they come from the stage's inputs again
        self.ds.save_checkpoint(str(ckpt_dir), tag=final.name, client_state={"step": step},
                                exclude_frozen_parameters=True)
        save_rng(final, self.env.rank)
        if self.env.is_main:
            (final / "state.json").write_text(json.dumps({"step": step}))
        finish(ckpt_dir, final, self.env.rank)

    def load(self, ckpt_dir: Path, job: StageJob) -> int:
        path, state = newest(ckpt_dir)
        load_path, _ = self.ds.load_checkpoint(str(ckpt_dir), tag=path.name, load_module_strict=False)
        if load_path is None:
            raise FileNotFoundError(f"{path}: DeepSpeed found no checkpoint there")
        load_rng(path, self.env.rank, state["step"])
        logger.info("resumed from %s (step %d)", path, state["step"])
        return int(state["step"])

    def gathered(self, model: nn.Module) -> AbstractContextManager:
        import deepspeed

        if not self.zero3:
            return nullcontext()
        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)

    def _init_config(self) -> dict:
        """What zero.Init needs to partition: stage 3 and the weights' precision. The precision is
        read from here, never passed as dtype=: DeepSpeed replaces a given dtype by bf16 on a CPU
        without fp16 support (zero.Init._set_dtype)."""
        return {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
                "bf16": {"enabled": bool(self.bf16)}}

    @contextmanager
    def build_context(self) -> Iterator[None]:
        """ZeRO-3: modules are partitioned as they are constructed (deepspeed.zero.Init) and weights
        read from disk go straight into the partitions (trainers/modeling/partitions.py;
        HfDeepSpeedConfig alive meanwhile), so no rank holds the whole model. Weights must then come
        from disk, since an init a parent module runs after construction would not reach the
        partitions; rank 0's values are not broadcast either (partitions.no_init_broadcast)."""
        if not self.zero3:
            yield
            return
        import deepspeed
        import torch._dynamo  # noqa: F401  imported inside zero.Init (which patches Tensor.__new__) it fails
        from transformers.integrations import HfDeepSpeedConfig

        import experts  # noqa: F401  the families' transformers modules, for the same reason

        cfg = self._init_config()
        hf = HfDeepSpeedConfig(cfg)  # transformers checks for it through a weak reference
        with deepspeed.zero.Init(config_dict_or_path=cfg), no_init_broadcast():  # rank 0's values are overwritten
            yield
        del hf

    def partition(self, module: nn.Module) -> nn.Module:
        """ZeRO-3: the parameters of `module` not partitioned yet are partitioned now (rank 0's values,
        exactly as built: a random init stays the one DDP would train)."""
        if self.zero3:
            import deepspeed

            deepspeed.zero.Init(module=module, config_dict_or_path=self._init_config())
        return module

    def first_build(self, make, write, read, scratch):
        """ZeRO-3: rank 0 alone builds the part whole (its seed and draws are DDP's), writes it to
        `scratch`, and every rank reads its partition's range back (no init, no broadcast of rank 0's
        values, the RNG untouched): no other rank ever holds the part whole."""
        if not self.zero3 or scratch is None:
            return super().first_build(make, write, read, scratch)
        scratch = Path(scratch)
        if self.env.is_main:
            scratch.mkdir(parents=True, exist_ok=True)
            write(make(), scratch)
            gc.collect()  # a built model may sit in reference cycles: gone before the read
        D.barrier()
        with torch.random.fork_rng(), self.build_context():
            part = read(scratch)
        D.barrier()  # every rank has read it
        if self.env.is_main:
            shutil.rmtree(scratch, ignore_errors=True)
            with suppress(OSError):  # the parts' common folder, once its last part is read
                scratch.parent.rmdir()
        return part

    def release(self) -> None:
        if getattr(self, "ds", None) is not None:
            self.ds.destroy()
        self.ds = self.opt = self.sched = None
