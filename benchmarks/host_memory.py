"""Host memory per rank under ZeRO-3 for a full-size LLM (Qwen2-0.5B's architecture, random weights
saved locally), 2 gloo processes on CPU: the build that reads each rank's ranges of the weights
straight into its partitions (trainers/modeling/partitions.py), the save that gathers one submodule
at a time (trainers/modeling/saving.py), a later stage's build from those shards, and for
comparison a gather of every parameter at once (what a save did before) and transformers' own
ZeRO-3 from_pretrained (rank 0 reads whole files); then a part with no weights on disk (a random
init) built once by rank 0 and read back by every rank (Engine.first_build), against every rank
building it whole and partitioning it (what a first build did before). Each phase's peak is the rise of the
process's peak RSS (VmHWM, reset between phases) over its RSS before the phase; the model's size
is its weights' bytes. `python -m benchmarks.host_memory [--out benchmarks/results/host_memory_cpu.json]`."""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from trainers.training import distributed as D

ROOT = Path(__file__).resolve().parents[1]
QWEN2_05B = {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 4096,
             "tie_word_embeddings": True}  # Qwen2-0.5B's config.json
MIB = 2**20


def _rss(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MIB
    raise KeyError(field)


def _reset_peak() -> float:
    """Resets VmHWM to the current RSS (Linux clear_refs 5); returns that RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss("VmRSS")


def write_source(path: Path) -> int:
    """The random full-size LLM in fp32 safetensors; returns its weights' bytes."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN2_05B))
    model.save_pretrained(str(path), safe_serialization=True)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _peak(phases: dict[str, float], name: str, fn):
    """fn() run as one phase: its peak RSS rise (and what it leaves) recorded under `name`."""
    D.barrier()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system: the base RSS is what is held
    base = _reset_peak()
    out = fn()
    phases[f"{name}_peak_mib"] = _rss("VmHWM") - base
    phases[f"after_{name}_mib"] = _rss("VmRSS") - base
    return out


def rank_job(source: Path, out: Path) -> dict:
    import deepspeed
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from trainers.modeling.llm import import_llm_class, load_causal_lm
    from trainers.modeling.partitions import read_llm
    from trainers.modeling.saving import save_llm
    from trainers.spec import LLMSpec
    from trainers.training.engines import make_engine

    env = D.init_distributed()
    engine = make_engine("deepspeed_zero3", env, None, seed=0, checkpoint_every=10**6, bf16=False)
    import_llm_class(LLMSpec(source=str(source)))
    phases: dict[str, float] = {}
    t0 = time.perf_counter()

    def build(path: Path, whole_files: bool):
        with engine.build_context():
            if whole_files:  # transformers' own ZeRO-3 load, for comparison
                return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            return load_causal_lm(path, dtype=torch.float32, attn_implementation="sdpa")

    def gather_all():  # every parameter at once: what a save did before
        with deepspeed.zero.GatheredParameters(list(llm.parameters()), modifier_rank=None):
            pass

    llm = _peak(phases, "build", lambda: build(source, False))
    share = sum(p.ds_tensor.numel() * p.ds_tensor.element_size() for p in llm.parameters())
    _peak(phases, "save", lambda: save_llm(llm, out, is_main=env.is_main, max_shard_bytes=256 * MIB))
    _peak(phases, "gather_all", gather_all)
    del llm
    llm = _peak(phases, "reload", lambda: build(out, False))  # a later stage reads the saved shards
    del llm
    llm = _peak(phases, "transformers_build", lambda: build(source, True))
    del llm

    def fresh():  # a part with no weights on disk yet: a random init
        torch.manual_seed(1)
        return Qwen2ForCausalLM(Qwen2Config(**QWEN2_05B))

    def first_build():  # rank 0 builds and writes it, every rank reads its ranges
        return engine.first_build(fresh, lambda m, d: save_llm(m, d, is_main=True, max_shard_bytes=256 * MIB),
                                  lambda d: read_llm(d, dtype=torch.float32, attn_implementation="sdpa"),
                                  out.parent / "first_build" / "llm")

    llm = _peak(phases, "first_build", first_build)
    del llm
    llm = _peak(phases, "whole_then_partition", lambda: engine.partition(fresh()))  # every rank builds it: before
    doc = {"rank": env.rank, "share_mib": share / MIB, **phases, "wall_s": time.perf_counter() - t0}
    ranks = D.gather_objects({k: round(v, 1) if isinstance(v, float) else v for k, v in doc.items()})
    D.shutdown()
    return {"ranks": ranks, "saved_files": sorted(p.name for p in out.glob("*.safetensors"))}


def main(argv: list[str] | None = None) -> int:
    if "RANK" in os.environ:  # a torchrun rank
        source, out, result = (Path(a) for a in (argv or sys.argv[1:]))
        doc = rank_job(source, out)
        if os.environ["RANK"] == "0":
            result.write_text(json.dumps(doc))
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.host_memory")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "host_memory_cpu.json"))
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        size = write_source(work / "llm")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "benchmarks.host_memory", str(work / "llm"), str(work / "saved"), str(work / "ranks.json")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            return 1
        ranks = json.loads((work / "ranks.json").read_text())
    doc = {"benchmark": "host_memory", "device": "cpu", "strategy": "deepspeed_zero3", "world_size": args.nproc,
           "llm": "Qwen2-0.5B architecture (random weights), fp32", "model_mib": round(size / MIB, 1),
           "torch": torch.__version__, **ranks}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    sys.stdout.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
