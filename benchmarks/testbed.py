"""The CPU testbed whose answer is known (issue 12, part 5): does the README's main job
(studies/tiny_greedy.yaml, skilled tiny experts) rank mixtures for a reason?

    python benchmarks/testbed.py [--workdir runs/testbed] [--seeds 0 1 2]

Measures, and prints as one JSON line (also benchmarks/results/testbed.json):
  a) the best mixture of the seed-0 study against its blind control, per benchmark (the paired
     interval of score - blind score lies above 0);
  b) the per-skill table: every skilled single expert probed on every skill (a fresh head on its
     frozen tokens); each skill's best expert should be the one trained on it;
  c) round 1's gap between the best and the worst candidate (seed means) against the seed spread
     (the mean over candidates of the standard deviation across the study seeds);
  d) the greedy selection of each study seed against the study file's `expect:` (answer and path,
     written from the design before any run; a mismatch fails the criterion and is reported);
  e) the wall time of the seed-0 study, skill pre-training included (fresh cache), and the load.
The studies share one cache (skills and stage 1 are trained once; the seeds vary the SFT seed);
the first seed runs alone on a fresh cache (the main job's time), the others then run together.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "tiny_greedy.yaml"
LETTER_SKILL = {"A": "caption", "B": "classify", "C": "mask", "D": "rotation", "E": "read", "F": "count"}


def _study_yaml(workdir: Path, seed: int) -> Path:
    path = workdir / f"study_seed{seed}.yaml"
    if path.is_file():  # --keep: the study continues with the file it was created from
        return path
    spec = yaml.safe_load(STUDY.read_text())
    spec["name"] = f"tiny_greedy_seed{seed}"
    spec["base_trial"]["seed"] = seed  # the SFT seed; pre-alignment keeps seed 0 (one stage-1 cache)
    spec["base_trial"]["align_seed"] = 0
    spec["search_space"] = str(ROOT / "search_spaces" / f"{spec['search_space']}.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _start_study(workdir: Path, seed: int, cache: Path) -> subprocess.Popen:
    study = _study_yaml(workdir, seed)
    link = workdir / f"seed{seed}" / "cache"  # a study's cache is <workdir>/cache: one for all seeds
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(cache, target_is_directory=True)
    log = (workdir / f"seed{seed}.log").open("w")
    return subprocess.Popen(["eagle-explore", "run", str(study), "--workdir", str(workdir / f"seed{seed}")],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _status(workdir: Path, seed: int) -> dict:
    study, wd = workdir / f"study_seed{seed}.yaml", workdir / f"seed{seed}"
    out = subprocess.run(["eagle-explore", "status", str(study), "--workdir", str(wd), "--json"], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out)


def _wait(procs: dict[int, subprocess.Popen]) -> None:
    for seed, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"study seed {seed} failed (exit {proc.returncode}); see its log")


def _wall(doc: dict) -> float:
    """First trial start to last trial end (skill pre-training happens inside the first trials)."""
    from datetime import datetime

    starts = [datetime.fromisoformat(t["datetime_start"]) for t in doc["trials"] if t["datetime_start"]]
    ends = [datetime.fromisoformat(t["datetime_complete"]) for t in doc["trials"] if t["datetime_complete"]]
    return (max(ends) - min(starts)).total_seconds()


def skill_table(cache_dir: Path, probe_seeds: tuple[int, ...] = (0, 1)) -> dict:
    """probe[expert][skill] (mean over probe seeds: fresh data and head) for the six skilled tiny
    experts; per skill the `margin`: the owner minus the best other expert on the same probe seed
    (paired: the same items), the smallest over the seeds (> 0 on every seed: `owner_best`)."""
    import experts
    from trainers.skills.tasks import FAMILY_SKILL, SKILLS, make_data
    from trainers.skills.train import DEFAULT_RECIPE as R
    from trainers.skills.train import SkillCache, probe

    cfgs = [experts.get_preset(p) for p in experts.TINY_PRESETS]
    dirs = SkillCache(cache_dir).ensure(cfgs)
    runs = {c.name: {s: [] for s in SKILLS} for c in cfgs}
    for seed in probe_seeds:
        data = {s: (make_data(s, R.n_train, seed, R.image_size, "train"),
                    make_data(s, R.n_eval, seed, R.image_size, "eval")) for s in SKILLS}
        for cfg, d in zip(cfgs, dirs):
            expert = experts.load_expert(d)
            for s in SKILLS:
                runs[cfg.name][s].append(round(probe(expert, s, seed, data=data[s]), 3))
    table = {n: {s: round(statistics.fmean(v), 3) for s, v in row.items()} for n, row in runs.items()}
    owner = {FAMILY_SKILL[c.family]: c.name for c in cfgs}
    margin = {s: round(min(runs[owner[s]][s][i] - max(runs[n][s][i] for n in runs if n != owner[s])
                           for i in range(len(probe_seeds))), 3) for s in SKILLS}
    best = {s: max(table, key=lambda n: table[n][s]) for s in SKILLS}
    return {"probe": table, "probe_seeds": {"seeds": list(probe_seeds), "runs": runs}, "best_per_skill": best,
            "margin": margin, "owner_best": {s: best[s] == owner[s] and margin[s] > 0 for s in SKILLS}}


def _best_vs_blind(doc: dict) -> dict:
    best = doc["best"]
    trial = next(t for t in doc["trials"] if t["number"] == best["number"])
    gap = trial.get("blind_gap_ci") or {}
    from trainers.trial_dir import read_result

    result = read_result(trial["trial_dir"])
    rows = {b: {"score": round(result["scores"][b], 2), "ci": [round(x, 2) for x in (trial["scores_ci"] or {}).get(b, [])],
                "blind": round(result["blind_scores"][b], 2), "gap_ci": [round(x, 2) for x in ci],
                "beats_blind": ci[0] > 0} for b, ci in gap.items()}
    for b, why in (result.get("blind_undefined") or {}).items():  # never counted as beating blind
        rows[b] = {"score": round(result["scores"][b], 2), "blind": round(result["blind_scores"][b], 2),
                   "beats_blind": None, "blind_undefined": why}
    return {"experts": best["experts"], "value": best["value"], "benchmarks": rows,
            "n_beating_blind": sum(r["beats_blind"] is True for r in rows.values())}


def _round(doc: dict, rnd: int) -> dict[str, float]:
    for entry in doc["greedy_path"]:
        if entry["round"] == rnd:
            return {c["experts"]: c["value"] for c in entry["candidates"]}
    return {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "testbed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--keep", action="store_true", help="report on the finished studies of the workdir (no run)")
    args = ap.parse_args(argv)
    wd = args.workdir.resolve()
    if wd.exists() and not args.keep:
        shutil.rmtree(wd)
    wd.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    first, rest = args.seeds[0], args.seeds[1:]
    loads = {} if args.keep else {first: os.getloadavg()}  # the first seed alone, on a fresh cache
    cache = wd / "cache"
    cache.mkdir(exist_ok=True)
    if not args.keep:
        _wait({first: _start_study(wd, first, cache)})
        loads.update({s: os.getloadavg() for s in rest})  # the others together, on the warm cache
        _wait({s: _start_study(wd, s, cache) for s in rest})
    docs = {s: _status(wd, s) for s in args.seeds}
    walls = {s: _wall(docs[s]) for s in args.seeds}
    rounds = [_round(docs[s], 1) for s in args.seeds]
    cands = sorted(set.intersection(*(set(r) for r in rounds)))
    means = {c: statistics.fmean(r[c] for r in rounds) for c in cands}
    spread = statistics.fmean(statistics.stdev(r[c] for r in rounds) for c in cands) if len(rounds) > 1 else None
    gap = max(means.values()) - min(means.values()) if means else None
    selections = {s: docs[s]["best"]["experts"] for s in args.seeds}
    saved = wd / "skill_table.json"
    table = json.loads(saved.read_text()) if args.keep and saved.is_file() else skill_table(cache)
    saved.write_text(json.dumps(table))
    blind = _best_vs_blind(docs[first])
    out = {
        "benchmark": "testbed", "measured_on": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "eagle-explore run studies/tiny_greedy.yaml (seeds " + " ".join(map(str, args.seeds)) + ")",
        "cpus": os.cpu_count(), "load_avg_at_start": {s: [round(x, 2) for x in v] for s, v in loads.items()},
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": {s: round(w, 1) for s, w in walls.items()},
        "a_best_vs_blind": blind, "b_skill_table": table,
        "c_round1": {"means": {c: round(v, 2) for c, v in means.items()}, "gap": gap, "seed_spread": spread,
                     "per_seed": rounds},
        "d_selections": selections, "d_expectation": {s: docs[s]["expectation"] for s in args.seeds},
        "criteria": {"a": blind["n_beating_blind"] >= 4, "b": all(table["owner_best"].values()),
                     "c": gap is not None and spread is not None and gap > 2 * spread,
                     "d": all((docs[s]["expectation"] or {}).get("met") is True for s in args.seeds),
                     "e": walls[first] < 600},
    }
    res = ROOT / "benchmarks" / "results" / "testbed.json"
    res.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
