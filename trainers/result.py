"""result.json: what a trial reports (scores, objective, per-stage time/throughput, peak memory)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainers.training import distributed as D
from trainers.training.metrics import peak_memory_mb
from trainers import trial_dir as TD


def build_result(stage_info: dict[str, dict[str, Any]], scores: dict[str, float], objective: float,
                 *, name: str, direction: str, heldout: float, peak_mb: float, world_size: int,
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
        "feature_cache": {s: i["feature_cache"] for s, i in stage_info.items() if "feature_cache" in i},
        "world_size": world_size, "strategy": strategy, "precision": precision,
    }


def trial_cost(stage_info: dict[str, dict[str, Any]], eval_s: float, world_size: int,
               device_type: str) -> dict[str, Any]:
    """The trial's compute ledger (explorer/study/ledger.py sums a study's): process-seconds per stage and
    for the evaluation (wall time x ranks, one device each: GPU-seconds on GPUs), FLOPs where
    counted (the expert forwards the feature cache saved), and what the caches saved: a stage-1 hit
    the cost recorded when its entry was made (None for entries older than the ledger), the feature
    cache the expert forwards stage 2 and SFT did not run."""
    process = {s: float(i.get("time_s", 0.0)) * world_size for s, i in stage_info.items()}
    process["eval"] = eval_s * world_size
    hits = [e for e in stage_info.get("align_expert", {}).get("experts", {}).values() if e.get("cached")]
    features = [e for i in stage_info.values() for e in i.get("feature_cache", {}).get("experts", {}).values()]
    saved = {"stage1_cache": {"process_s": sum(e["saved_process_s"] for e in hits if e.get("saved_process_s") is not None),
                              "hits": len(hits), "unknown": sum(e.get("saved_process_s") is None for e in hits)},
             "feature_cache": {"process_s": sum(e["saved_process_s"] for e in features),
                               "forwards": sum(e["forwards_saved"] for e in features),
                               "hits": sum(bool(e["cached"]) for e in features)}}
    return {"unit": "gpu_s" if device_type == "cuda" else "process_s", "process_s": process,
            "total_process_s": sum(process.values()),
            "flops": {"feature_cache_saved": sum(e["saved_flops"] for e in features)} if features else {},
            "saved": saved}


def peak_memory_all_ranks(device: torch.device) -> float:
    """The largest peak memory over the ranks (MB)."""
    return float(D.all_reduce(torch.tensor([peak_memory_mb(device)], dtype=torch.float64), op="max")[0])


def write_result(out_dir: Path, result: dict[str, Any], is_main: bool) -> None:
    """Rank 0 writes result.json atomically; every rank waits for it."""
    if is_main:
        tmp = out_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(out_dir / TD.RESULT)
    D.barrier()
