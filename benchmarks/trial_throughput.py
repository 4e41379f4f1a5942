"""Trial throughput: samples/s and tokens/s per stage for studies/trials/tiny.yaml on CPU (1 process);
with a GPU, a larger bf16 config (1.1B random-init Llama) and its model FLOPs utilisation.
Prints ONE JSON line. `python -m benchmarks.trial_throughput [--nproc N] [--gpu-peak-tflops 989]`."""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "studies" / "trials" / "tiny.yaml"
H100_BF16_DENSE_TFLOPS = 989.0


def gpu_spec(base: dict) -> dict:
    """A larger bf16 trial for one GPU: the bench-llama preset (1.1B params), SFT with the LLM trained."""
    d = json.loads(json.dumps(base))
    d["llm"].update(preset="bench-llama", max_length=512)
    d["train"].update(precision="bf16", checkpoint_every=10**6)
    d["data"]["synthetic"].update(n_pretrain=512, n_sft=512, n_heldout=32)
    for st in d["train"]["stages"].values():
        st.update(global_batch_size=32, micro_batch_size=16, max_steps=20, epochs=1)
    return d


def llm_params(out_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(out_dir / "stages" / "sft" / "model" / "llm" / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


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
    ap.add_argument("--gpu-peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS)
    args = ap.parse_args(argv)
    base = yaml.safe_load(TINY.read_text())
    on_gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        spec = gpu_spec(base) if on_gpu else base
        result, wall = run(spec, args.nproc, Path(tmp))
        figures = {
            "benchmark": "trial_throughput", "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
            "config": "bench-llama bf16" if on_gpu else "tiny.yaml fp32", "nproc": args.nproc,
            "wall_s": round(wall, 2), "heldout_loss": round(result["heldout_loss"], 4),
            "peak_memory_mb": round(result["peak_memory_mb"], 1), "steps": result["steps"],
            "stages": {s: {"samples_per_s": round(v["samples_per_s"], 1), "tokens_per_s": round(v["tokens_per_s"], 1),
                           "time_s": round(result["stage_time_s"][s], 2)} for s, v in result["throughput"].items()},
        }
        if on_gpu:  # MFU of SFT (whole LLM trained): 6 * params * tokens/s over the GPU's peak bf16 rate
            n = llm_params(Path(tmp) / "trial")
            tps = result["throughput"]["sft"]["tokens_per_s"]
            figures["llm_params"] = n
            figures["sft_mfu"] = round(6 * n * tps / (args.gpu_peak_tflops * 1e12 * args.nproc), 4)
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
