"""Controller overhead: seconds per trial spent by the controller + executor on no-op trials, for
the Optuna (local threads) and Ray Tune backends, and trials/s with 1 and 2 trials at once.
A grid study (fusion x SFT lr, no round barrier) runs N no-op trials end to end: planning,
storage, trial spec, executor, recording. Prints ONE JSON line.
`python -m benchmarks.controller_overhead [--trials 10] [--backends optuna,ray]`"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FUSIONS = ["sequence_append", "channel_concat", "llava_hr", "mini_gemini", "deformable"]
BASE_TRIAL = {"experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama", "template": "plain"},
              "data": {"synthetic": {"n_pretrain": 16, "n_sft": 16, "n_heldout": 8, "n_eval": 8}}}


def noop_runner(job) -> dict[str, Any]:
    """A trial that does nothing: all measured time is the sweeper's."""
    return {"objective": float(job.number)}


def _study(name: str, n_trials: int, concurrent: int, backend: str, workdir: Path):
    from explorer.study.load import parse_study
    lrs = [1e-5 * (i + 1) for i in range(max(1, -(-n_trials // len(FUSIONS))))]
    data = {"name": name, "strategy": {"type": "grid", "experts": ["A"],
                                       "axes": {"fusion": FUSIONS, "train.stages.sft.lr": lrs}},
            "search_space": "eagle_tiny", "base_trial": BASE_TRIAL, "backend": backend,
            "objective": {"metric": "heldout_loss", "direction": "minimize"},
            "budget": {"max_trials": n_trials},
            "resources": {"max_concurrent_trials": concurrent, "cpus_per_worker": 0.5},
            "heartbeat_interval_s": 5, "grace_period_s": 30, "poll_interval_s": 0.05}
    return parse_study(data, f"{name}.yaml", workdir)


def run_once(backend: str, n_trials: int, concurrent: int) -> dict[str, float]:
    from explorer.controller import run_study
    from explorer.study.storage import default_storage_url

    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        work = Path(tmp)
        spec = _study(f"overhead-{backend}-{concurrent}", n_trials, concurrent, backend, work)
        t0 = time.perf_counter()
        out = run_study(spec, default_storage_url(work), work, runner=noop_runner, backend=backend)
        wall = time.perf_counter() - t0
    if out.n_complete != n_trials:
        raise RuntimeError(f"{backend} x{concurrent}: {out.n_complete}/{n_trials} trials completed")
    return {"wall_s": round(wall, 3), "trials_per_s": round(n_trials / wall, 3),
            "overhead_s_per_trial": round(wall * concurrent / n_trials, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--backends", default="optuna,ray")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    figures: dict[str, Any] = {"benchmark": "controller_overhead", "trials": args.trials, "cpus": os.cpu_count()}
    for backend in args.backends.split(","):
        if backend == "ray":
            import ray

            import explorer.backends.ray_tune  # noqa: F401  (registers the executor)

            # Ray workers import noop_runner by module name.
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
            t0 = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            figures["ray_init_s"] = round(time.perf_counter() - t0, 3)
        for concurrent in (1, 2):
            # the Ray executor starts its Tune run on the first trial: counted, as a study pays it
            figures[f"{backend}_x{concurrent}"] = run_once(backend, args.trials, concurrent)
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
