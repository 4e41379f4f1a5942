"""Stage 2 with and without the feature cache (train.feature_cache), on the tiny greedy study's base
trial (studies/tiny_greedy.yaml: 256 stage-2 items, 16 steps; SFT cut to one step, no benchmarks):
the same trial three times in one cache directory, cache off, on and made (a miss), on and read (a
hit); then the cache the whole tiny greedy study fills (its six experts over the stage-2 data).
Prints ONE JSON line; run it on a quiet machine (the load average is in the line).
`python -m benchmarks.feature_cache`."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "tiny_greedy.yaml"


def _trial(base: dict, enabled: bool, work: Path, name: str) -> dict:
    from trainers.launch import run_trial

    spec = json.loads(json.dumps(base))
    spec.update(name=name, cache_dir=str(work / "cache"))
    spec["train"]["stages"]["sft"]["max_steps"] = 1
    spec["eval"] = {"benchmarks": []}
    spec["train"]["feature_cache"] = {"enabled": enabled}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_trial(path, work / name, nproc=1)
    fc = result["feature_cache"]["align_projector"]
    return {"stage2_s": round(result["stage_time_s"]["align_projector"], 3), "expert_forwards": fc["expert_forwards"],
            "hits": sum(e["cached"] for e in fc.get("experts", {}).values()), "entry_bytes": fc.get("bytes"),
            "load_avg": os.getloadavg()[0]}


def study_cache_bytes(base: dict) -> dict[str, int]:
    """Bytes of each expert's entry in the tiny greedy study (every letter of its search space)."""
    import experts
    from search_spaces.loader import load_search_space
    from trainers.caches.features import entry_bytes

    n = base["data"]["synthetic"]["n_pretrain"]
    out = {}
    for letter, entry in load_search_space("eagle_tiny").experts.items():
        e = experts.build_expert(experts.get_preset(entry.tiny))
        out[letter] = entry_bytes(n, e.grid * e.grid, e.out_dim)
    return out


def main() -> int:
    base = yaml.safe_load(STUDY.read_text())["base_trial"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        runs = {name: _trial(base, enabled, work, name) for name, enabled in
                (("off", False), ("made", True), ("hit", True))}
        measured = sum(f.stat().st_size for f in (work / "cache" / "features").rglob("*") if f.is_file())
        wall = time.perf_counter() - t0
    per_expert = study_cache_bytes(base)
    print(json.dumps({"trial": "tiny_greedy base (A+B), 1 process, CPU", "stage2": runs,
                      "hit_vs_off": round(runs["hit"]["stage2_s"] / runs["off"]["stage2_s"], 3),
                      "cache_bytes_measured_A+B": measured, "study_cache_bytes": sum(per_expert.values()),
                      "study_cache_bytes_per_expert": per_expert, "wall_s": round(wall, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
