"""Mid-stage checkpoints: trainable weights (safetensors) + optimizer/scheduler/rng/step state, written
atomically (tmp dir + rename) so a killed trial resumes from the last complete one."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

KEEP = 2  # complete checkpoints kept per stage


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def latest_step(root: str | Path) -> int | None:
    """Step of the newest complete checkpoint under root (complete = has its COMPLETE marker)."""
    root = Path(root)
    steps = [int(p.name.split("_")[1]) for p in root.glob("step_*") if (p / "COMPLETE").is_file()]
    return max(steps) if steps else None


def _prune(root: Path) -> None:
    done = sorted(p for p in root.glob("step_*") if (p / "COMPLETE").is_file())
    for old in done[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp_step_*"):
        shutil.rmtree(tmp, ignore_errors=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, optimizer, scheduler,
                    rank: int, ds_engine=None, extra: dict[str, Any] | None = None) -> Path:
    """All ranks call this. DDP: rank 0 writes; DeepSpeed: its own save_checkpoint (every rank)."""
    root = Path(root)
    final = _step_dir(root, step)
    state = {"step": step, **(extra or {})}
    if ds_engine is not None:
        ds_engine.save_checkpoint(str(root), tag=final.name, client_state=state)
        _barrier()
        if rank == 0:
            (final / "state.json").write_text(json.dumps(state))
            (final / "COMPLETE").write_text("ok")
            _prune(root)
        _barrier()
        return final
    if rank == 0:
        tmp = root / f".tmp_{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        (tmp / "COMPLETE").write_text("ok")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _prune(root)
        logger.info("checkpoint %s", final)
    _barrier()
    return final


def load_checkpoint(root: str | Path, model: torch.nn.Module, optimizer, scheduler,
                    ds_engine=None) -> dict[str, Any]:
    """Restore the newest complete checkpoint; returns its state dict (with 'step')."""
    root = Path(root)
    step = latest_step(root)
    if step is None:
        raise FileNotFoundError(f"{root}: no complete checkpoint to resume from")
    path = _step_dir(root, step)
    state = json.loads((path / "state.json").read_text())
    if ds_engine is not None:
        load_path, _ = ds_engine.load_checkpoint(str(root), tag=path.name)
        if load_path is None:
            raise FileNotFoundError(f"{path}: DeepSpeed found no checkpoint there")
        return state
    weights = load_file(str(path / "trainable.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if unexpected or trainable - set(weights):
        raise RuntimeError(f"{path}: checkpoint does not match the stage's trainable parameters "
                           f"(unexpected {sorted(unexpected)[:3]}, missing {sorted(trainable - set(weights))[:3]})")
    blob = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng_cpu"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    logger.info("resumed from %s (step %d)", path, step)
    return state
