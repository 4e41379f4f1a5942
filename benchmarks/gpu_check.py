"""A GPU machine check in one command: the tiny trial with NCCL + bf16 under ddp, deepspeed_zero2
and deepspeed_zero3 on 1 GPU (and on 2 where there are two): every stage's loss falls and
result.json is complete; ZeRO-3's partitioned fresh build and evaluation on the partitions
(benchmarks.zero3_check, NCCL, bf16); then the full-size throughput benchmark (benchmarks.full_size_throughput)
and the memory estimate against measured peaks (benchmarks.memory_check). Meant to finish in
under 8 minutes on one H100/H200. Prints ONE JSON line (also written to $OUT/gpu_check.json when
$OUT is set); exits 1 when a check fails, 2 without CUDA.
`--rehearse-on-cpu` runs the same path on this machine: gloo on 2 processes, fp32, tiny sizes (the
suite runs it, so the script that first meets a GPU has already run end to end).
`python -m benchmarks.gpu_check [--skip-full-size] [--steps 3] [--rehearse-on-cpu]`."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "studies" / "trials" / "tiny.yaml"
STRATEGIES = ("ddp", "deepspeed_zero2", "deepspeed_zero3")
RESULT_KEYS = {"scores", "objective", "objective_name", "heldout_loss", "stage_time_s", "throughput",
               "peak_memory_mb", "steps", "world_size", "loss", "precision", "strategy"}


def tiny_gpu_spec(strategy: str, work: Path, precision: str = "bf16") -> dict[str, Any]:
    """studies/trials/tiny.yaml in `precision` under `strategy`: one epoch per stage, batches that
    split over 1 or 2 processes."""
    d = yaml.safe_load(TINY.read_text())
    d["train"].update(strategy=strategy, precision=precision, checkpoint_every=10**6)
    d["data"]["synthetic"].update(n_pretrain=128, n_sft=128, n_heldout=16)
    for st in d["train"]["stages"].values():
        st.update(global_batch_size=8, micro_batch_size=4)
    d["cache_dir"] = str(work / "cache")
    return d


def check_result(result: dict[str, Any], nproc: int, precision: str = "bf16") -> list[str]:
    """What is wrong with a trial's result.json (nothing: [])."""
    problems = [f"result.json lacks {k}" for k in sorted(RESULT_KEYS - set(result))]
    if result.get("world_size") != nproc:
        problems.append(f"world_size {result.get('world_size')} != {nproc}")
    if result.get("precision") != precision:
        problems.append(f"precision {result.get('precision')} ({precision} expected)")
    for stage, loss in (result.get("loss") or {}).items():
        if not loss["last"] < loss["first"]:
            problems.append(f"{stage}: loss did not fall ({loss['first']:.4f} -> {loss['last']:.4f})")
    if not result.get("peak_memory_mb", 0) > 0:
        problems.append("no peak memory recorded")
    return problems


def run_tiny(strategy: str, nproc: int, work: Path, precision: str = "bf16") -> dict[str, Any]:
    from trainers.launch import TrialFailed, run_trial

    work.mkdir(parents=True, exist_ok=True)
    path = work / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_gpu_spec(strategy, work, precision), sort_keys=False))
    t0 = time.perf_counter()
    try:
        result = run_trial(path, work / "trial", nproc=nproc, timeout_s=300)
    except TrialFailed as err:
        return {"ok": False, "problems": [str(err).splitlines()[0]], "wall_s": round(time.perf_counter() - t0, 1)}
    problems = check_result(result, nproc, precision)
    return {"ok": not problems, "problems": problems, "wall_s": round(time.perf_counter() - t0, 1),
            "heldout_loss": round(result["heldout_loss"], 4), "peak_memory_mb": round(result["peak_memory_mb"], 1),
            "loss": result.get("loss"), "sft_tokens_per_s": round(result["throughput"]["sft"]["tokens_per_s"], 1)}


def run_zero3_check(nproc: int, work: Path) -> dict[str, Any]:
    """benchmarks.zero3_check under torchrun on `nproc` GPUs: its JSON line, or why there is none."""
    import os
    import subprocess

    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "benchmarks.zero3_check", str(work)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"ok": False, "problems": ["zero3_check: no result within 300 s (a rank waiting on the others?)"]}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith('{"benchmark": "zero3_check"')]
    if not lines:
        return {"ok": False, "problems": [f"zero3_check exited {out.returncode}: {out.stderr.strip()[-500:]}"]}
    return {**json.loads(lines[-1]), "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-full-size", action="store_true", help="only the tiny distributed trials")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage of the full-size benchmark")
    ap.add_argument("--gpu-peak-tflops", type=float, default=None, help="bf16 dense peak for GPUs not listed")
    ap.add_argument("--rehearse-on-cpu", action="store_true", help="the same checks on CPU: gloo, 2 processes, fp32")
    args = ap.parse_args(argv)
    cpu = args.rehearse_on_cpu
    if not cpu and not torch.cuda.is_available():
        sys.stderr.write("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine, "
                         "or --rehearse-on-cpu\n")
        return 2
    t0 = time.perf_counter()
    n_gpus = 2 if cpu else torch.cuda.device_count()  # on CPU: 2 gloo processes stand for 2 GPUs
    nprocs = [2] if cpu else sorted({1, min(2, n_gpus)})  # the multi-process path is what a CPU can rehearse
    precision, unit = ("fp32", "cpu") if cpu else ("bf16", "gpu")
    doc: dict[str, Any] = {"benchmark": "gpu_check", "rehearsal": cpu, "device": "cpu" if cpu else torch.cuda.get_device_name(0),
                           "gpus": 0 if cpu else n_gpus, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "tiny_trials": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in nprocs:
            for strategy in STRATEGIES:
                key = f"{strategy}/{nproc}{unit}"
                doc["tiny_trials"][key] = run_tiny(strategy, nproc, Path(tmp) / key.replace("/", "_"), precision)
        doc["zero3"] = {f"{n}{unit}": run_zero3_check(n, Path(tmp) / f"zero3_{n}") for n in nprocs}
        from benchmarks.memory_check import compare

        doc["memory_check"] = compare(Path(tmp) / "memory", micro_batch=8, device="cpu" if cpu else "cuda:0")
    if not args.skip_full_size:
        from benchmarks.full_size_throughput import benchmark

        doc["full_size"] = benchmark(tiny=cpu, steps=1 if cpu else args.steps, peak_override=args.gpu_peak_tflops)
    doc["ok"] = all(r["ok"] for r in [*doc["tiny_trials"].values(), *doc["zero3"].values()])
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(doc)
    sys.stdout.write(line + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(line + "\n")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
