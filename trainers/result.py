"""result.json: what a trial reports (scores, objective, per-stage time/throughput, peak memory)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainers import distributed as D
from trainers.metrics import peak_memory_mb


def build_result(stage_info: dict[str, dict[str, Any]], scores: dict[str, float], objective: float,
                 name: str, direction: str, heldout: float, peak_mb: float, world_size: int,
                 strategy: str, precision: str) -> dict[str, Any]:
    return {
        "scores": scores, "objective": objective, "objective_name": name, "direction": direction,
        "heldout_loss": heldout,
        "stage_time_s": {s: i.get("time_s", 0.0) for s, i in stage_info.items()},
        "throughput": {s: {"samples_per_s": i.get("samples_per_s", 0.0), "tokens_per_s": i.get("tokens_per_s", 0.0)}
                       for s, i in stage_info.items()},
        "peak_memory_mb": peak_mb,
        "steps": {s: i.get("steps", 0) for s, i in stage_info.items()},
        "loss": {s: {"first": i.get("first_loss"), "last": i.get("last_loss")} for s, i in stage_info.items()
                 if "first_loss" in i},
        "skipped_records": {s: i["skipped_records"] for s, i in stage_info.items() if "skipped_records" in i},
        "truncated_records": {s: i["truncated_records"] for s, i in stage_info.items() if "truncated_records" in i},
        "stage1_cache": stage_info.get("align_expert", {}).get("experts", {}),
        "world_size": world_size, "strategy": strategy, "precision": precision,
    }


def peak_memory_all_ranks(device: torch.device) -> float:
    """The largest peak memory over the ranks (MB)."""
    return float(D.all_reduce(torch.tensor([peak_memory_mb(device)], dtype=torch.float64), op="max")[0])


def write_result(out_dir: Path, result: dict[str, Any], is_main: bool) -> None:
    """Rank 0 writes result.json atomically; every rank waits for it."""
    if is_main:
        tmp = out_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(out_dir / "result.json")
    D.barrier()
