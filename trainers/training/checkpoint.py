"""Mid-stage checkpoints in the DDP format: trainable weights (safetensors), optimizer/scheduler
state, each rank's RNG state, the step; written atomically (tmp dir + rename, COMPLETE marker) so a
killed trial resumes from the last complete one. DeepSpeed's format: trainers/training/zero.py."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainers.training import distributed as D
logger = logging.getLogger(__name__)

KEEP = 2  # complete checkpoints kept per stage
COMPLETE = "COMPLETE"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def latest_step(root: str | Path) -> int | None:
    """Step of the newest complete checkpoint under root (complete = has its COMPLETE marker)."""
    root = Path(root)
    steps = [int(p.name.split("_")[1]) for p in root.glob("step_*") if (p / COMPLETE).is_file()]
    return max(steps) if steps else None


def prune(root: Path) -> None:
    done = sorted(p for p in root.glob("step_*") if (p / COMPLETE).is_file())
    for old in done[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp_step_*"):
        shutil.rmtree(tmp, ignore_errors=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


# ----- per-rank RNG (dropout, drop-path) -----
def _rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng_rank{rank}.pt"


def save_rng(directory: Path, rank: int) -> None:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    torch.save(state, _rng_file(directory, rank))


def load_rng(directory: Path, rank: int, step: int) -> None:
    """This rank's RNG streams as saved. A checkpoint written by fewer ranks has no file for this one:
    its stream is re-seeded from (step, rank) and the log says so."""
    path = _rng_file(directory, rank)
    if not path.is_file():
        seed = int.from_bytes(hashlib.sha256(f"{step}:{rank}".encode()).digest()[:8], "little") >> 1
        logger.warning("%s: no RNG state for rank %d (written by fewer ranks): dropout re-seeded (%d)",
                       directory, rank, seed)
        torch.manual_seed(seed)
        return
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def finish(root: Path, final: Path, rank: int) -> None:
    """Every rank has written its part of `final`: rank 0 marks it complete and prunes old ones."""
    D.barrier()
    if rank == 0:
        (final / COMPLETE).write_text("ok")
        prune(root)
        logger.info("checkpoint %s", final)
    D.barrier()


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, *, optimizer, scheduler,
                    rank: int, extra: dict[str, Any] | None = None) -> Path:
    """All ranks call this: rank 0 writes weights and optimizer state, each rank its RNG state."""
    root = Path(root)
    final = step_dir(root, step)
    tmp = root / f".tmp_{final.name}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}))
    D.barrier()
    save_rng(tmp, rank)
    D.barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finish(root, final, rank)
    return final


def newest(root: str | Path) -> tuple[Path, dict[str, Any]]:
    """The newest complete checkpoint directory and its state.json."""
    root = Path(root)
    step = latest_step(root)
    if step is None:
        raise FileNotFoundError(f"{root}: no complete checkpoint to resume from")
    path = step_dir(root, step)
    return path, json.loads((path / "state.json").read_text())


def load_checkpoint(root: str | Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0) -> dict[str, Any]:
    """Restore the newest complete checkpoint; returns its state dict (with 'step')."""
    path, state = newest(root)
    weights = load_file(str(path / "trainable.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if unexpected or trainable - set(weights):
        raise RuntimeError(f"{path}: checkpoint does not match the stage's trainable parameters "
                           f"(unexpected {sorted(unexpected)[:3]}, missing {sorted(trainable - set(weights))[:3]})")
    blob = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    load_rng(path, rank, state["step"])
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state
