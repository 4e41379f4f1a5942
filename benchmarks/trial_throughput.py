"""Trial throughput. On CPU: samples/s and tokens/s per stage of the real trial studies/trials/tiny.yaml
(torchrun, N processes). With a GPU: the full-size benchmark (benchmarks.full_size_throughput: the
A+B+F+E+C mixture at paper resolutions, a 7B-shaped LLM, 1024 visual tokens + LLaVA-length text)
with MFU from FlopCounterMode over one real step per stage, tokens/s per GPU and peak memory.
Prints ONE JSON line. `python -m benchmarks.trial_throughput [--nproc N] [--gpu-peak-tflops T]`."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "studies" / "trials" / "tiny.yaml"


def run(spec: dict, nproc: int, work: Path) -> tuple[dict, float]:
    from trainers.launch import run_trial

    path = work / "trial.yaml"
    spec = {**spec, "cache_dir": str(work / "cache")}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.perf_counter()
    result = run_trial(path, work / "trial", nproc=nproc)
    return result, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--gpu-peak-tflops", type=float, default=None,
                    help="bf16 dense peak of a GPU not in trainers.estimate.flops (H100 SXM / H200: 989, A100: 312)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per stage (GPU benchmark)")
    args = ap.parse_args(argv)
    if torch.cuda.is_available():
        from benchmarks.full_size_throughput import benchmark

        figures = {**benchmark(steps=args.steps, peak_override=args.gpu_peak_tflops), "benchmark": "trial_throughput"}
        sys.stdout.write(json.dumps(figures) + "\n")
        return 0
    base = yaml.safe_load(TINY.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        result, wall = run(base, args.nproc, Path(tmp))
        figures = {
            "benchmark": "trial_throughput", "device": "cpu", "config": "tiny.yaml fp32", "nproc": args.nproc,
            "wall_s": round(wall, 2), "heldout_loss": round(result["heldout_loss"], 4),
            "peak_memory_mb": round(result["peak_memory_mb"], 1), "steps": result["steps"],
            "stages": {s: {"samples_per_s": round(v["samples_per_s"], 1), "tokens_per_s": round(v["tokens_per_s"], 1),
                           "time_s": round(result["stage_time_s"][s], 2)} for s, v in result["throughput"].items()},
        }
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
