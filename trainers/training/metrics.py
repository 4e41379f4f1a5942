"""metrics.jsonl writer (rank 0) and peak-memory / throughput helpers."""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

METRIC_KEYS = ("step", "stage", "loss", "lr", "samples_per_s", "tokens_per_s", "time")


class MetricsWriter:
    """Appends one JSON line per logged step; only rank 0 writes."""

    def __init__(self, path: str | Path, rank: int = 0) -> None:
        self.path = Path(path)
        self.rank = rank

    def write(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        record = {"time": time.time(), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, tag: str, step: int) -> None:
        """Drop lines of stage `tag` past `step` (logged after the checkpoint a resume starts from)."""
        if self.rank != 0 or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("tag", rec.get("stage")) == tag and rec.get("step", 0) > step:
                continue
            kept.append(line)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        tmp.replace(self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def peak_memory_mb(device: torch.device) -> float:
    """torch.cuda.max_memory_allocated on GPU; peak RSS of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
