"""The one place that calls torch.distributed (a test enforces it): process-group setup with a
timeout, and device-aware collectives. On GPU the group is `cpu:gloo,cuda:nccl`, so CPU tensors
(losses, counters, memory figures) reduce over gloo; a group made elsewhere with NCCL only (Ray
Train) gets CPU tensors copied to the current device and back."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

TIMEOUT_ENV = "EAGLE_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 30.0  # a stuck collective fails the trial instead of hanging it for NCCL's default
_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_MIN))
    try:
        minutes = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of minutes") from None
    if minutes <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} must be positive")
    return timedelta(minutes=minutes)


def backend_for(device: torch.device) -> str:
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_group(device: torch.device, **kwargs: Any) -> None:
    """init_process_group for `device` with the timeout (kwargs: init_method, rank, world_size)."""
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device), timeout=timeout(), **kwargs)


def init_distributed() -> DistEnv:
    """Process group from torchrun's env; single process without torchrun. DeepSpeed adopts the
    group already made here (deepspeed.initialize does not make its own)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", local) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    if "MASTER_ADDR" in os.environ:
        init_group(device)
    return DistEnv(rank, world, local, device)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def group_rank(group: Any = None) -> int:
    """This process's rank in `group` (a ZeRO-3 parameter's partition group), 0 when not distributed."""
    return dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0


def _nccl_only() -> bool:
    return dist.get_backend() == "nccl"


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A reduced copy of `t` on t's device (t itself untouched); `t` when not distributed."""
    if not active():
        return t
    if op not in _OPS:
        raise KeyError(f"unknown reduce op {op!r}; known: {', '.join(_OPS)}")
    home = t.device
    work = t.detach().clone()
    if home.type == "cpu" and _nccl_only():
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=_OPS[op])
    return work.to(home)


def all_reduce_values(values: list[float], op: str = "sum") -> list[float]:
    """Python numbers reduced over ranks (float64)."""
    return all_reduce(torch.tensor(values, dtype=torch.float64), op).tolist()


def barrier() -> None:
    if active():
        if _nccl_only():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's object, in rank order, on `dst` (None elsewhere); [obj] when not distributed."""
    if not active():
        return [obj]
    parts: list | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, parts, dst=dst)
    return parts


def shutdown(wait: bool = True) -> None:
    """Destroy the group (every rank), after a barrier unless `wait` is False (an error path, where
    another rank may never arrive)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            barrier()
        # a DDP wrapper left in a reference cycle is otherwise freed at interpreter exit, after the
        # group, and its reducer aborts the process (SIGABRT, "terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()
