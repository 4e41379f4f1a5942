"""Rank transfer of the training-free pre-screen (issue 25, item 2): does a score computed from the
experts' features alone, before any training, rank the testbed's round-1 candidates (C, D, E, F
beside A+B) as the trained trials did?

    python benchmarks/prescreen_transfer.py [--seeds 0 1 2] [--n-images 512 1024 2048 4096] [--cache-dir DIR]

For studies/tiny_greedy.yaml and its permuted twin, per testbed seed s (the skills, the data and
the SFT seeded by s, as benchmarks/testbed.py runs them), every method of trainers/prescreen/score.py
on flattened and on token-pooled features, against the trained round-1 values of
benchmarks/results/testbed.json (c_round1.per_seed, f_twin_rounds): Kendall's tau, weighted tau
(as explorer/report/rank_transfer.py), whether its top candidate is the trained winner, where it
ranks the winner, and its seconds (reading the images, the experts' forward passes, the scores;
the skilled experts and the data are the trials' own, made once); the same against the trained
mean over the seeds (vs_seed_mean). Skilled experts missing from the cache are trained first
(skill_training_s: this run's wait, and what each expert's training took when it was made).
For scale, the same taus between the trained seeds (trained_between_seeds).
Writes benchmarks/results/prescreen_transfer.json and prints it as one JSON line."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
STUDIES = {"main": ROOT / "studies" / "tiny_greedy.yaml", "twin": ROOT / "studies" / "tiny_greedy_permuted.yaml"}
TESTBED = ROOT / "benchmarks" / "results" / "testbed.json"
RESULT = ROOT / "benchmarks" / "results" / "prescreen_transfer.json"


def trial_spec(study: Path, seed: int):
    """The study's base trial (all six experts) with testbed seed `seed`, and its strategy."""
    from trainers.spec import parse_trial_spec

    doc = yaml.safe_load(study.read_text())
    trial = doc["base_trial"]
    trial["seed"] = trial["align_seed"] = trial["skill_seed"] = seed  # benchmarks/testbed.py's seeding
    trial["data"]["synthetic"]["seed"] = seed
    return parse_trial_spec(trial, f"{study}: base_trial"), doc["strategy"]


def trained_round1(testbed: dict, kind: str, base: list[str], cands: list[str]) -> list[dict[str, float]]:
    """Per seed, candidate letter -> trained round-1 value."""
    rows = testbed["c_round1"]["per_seed"] if kind == "main" else testbed["f_twin_rounds"]
    name = "+".join(base)
    return [{c: row[f"{name}+{c}"] for c in cands} for row in rows]


def agreement(scores: dict[str, float], trained: dict[str, float]) -> dict:
    from scipy.stats import kendalltau, weightedtau

    from trainers.prescreen.score import order

    cands = sorted(trained)
    x, y = [scores[c] for c in cands], [trained[c] for c in cands]
    winner, ranked = order(trained)[0], order(scores)
    return {"tau": round(float(kendalltau(x, y).statistic), 3), "weighted_tau": round(float(weightedtau(x, y).statistic), 3),
            "top1": ranked[0], "winner": winner, "same_top": ranked[0] == winner,
            "winner_rank": ranked.index(winner) + 1}


def skill_training(spec, cache_dir: Path) -> dict[str, float]:
    """Per skilled expert, the seconds its skill pre-training took when it was made (the cache's meta)."""
    from trainers.expert_entries import resolve_expert
    from trainers.skills.train import SkillCache, skill_keys

    cache = SkillCache(cache_dir)
    return {resolve_expert(spec.experts[int(i)]).letter: round(cache.meta(key)["time_s"], 1)
            for i, key in skill_keys(spec).items()}


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return round(statistics.fmean(vals), 3) if vals else None


def between_seeds(trained: dict[str, list[dict[str, float]]]) -> dict:
    """The trained round 1 of one seed as a predictor of another's (every ordered pair), over both
    studies and per study."""
    def pairs(runs_by_study):
        rows = [agreement(a, b) for runs in runs_by_study for a, b in itertools.permutations(runs, 2)]
        return {"tau": _mean(r["tau"] for r in rows), "weighted_tau": _mean(r["weighted_tau"] for r in rows),
                "same_top_share": _mean(float(r["same_top"]) for r in rows), "pairs": len(rows)}

    return {**pairs(trained.values()), "by_study": {k: pairs([v]) for k, v in trained.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-images", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "prescreen" / "cache",
                    help="skilled experts and synthetic data (runs/testbed/cache reuses the testbed's)")
    args = ap.parse_args(argv)
    import torch

    from trainers.prescreen.features import extract
    from trainers.prescreen.score import METHODS, order, round_scores

    torch.set_num_threads(1)  # a shared 2-core machine; tiny experts gain little from more
    testbed = json.loads(TESTBED.read_text())
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # the machine is shared: seconds depend on it
    runs, trained, skills_s, probes = [], {}, {}, {}
    for kind, path in STUDIES.items():
        for seed in args.seeds:
            spec, strategy = trial_spec(path, seed)
            base, cands = strategy["base"], strategy["candidates"]
            trained.setdefault(kind, trained_round1(testbed, kind, base, cands))
            target = trained[kind][list(testbed["wall_s"]["main"]).index(str(seed))]  # its seeds, in run order
            mean = {c: statistics.fmean(r[c] for r in trained[kind]) for c in cands}  # less noisy than one seed
            for n in args.n_images:
                feats = extract(spec, args.cache_dir, n_images=n)
                skills_s.setdefault(f"{kind}{seed}", {"this_run_s": round(feats.seconds["skills_s"], 1),
                                                      "trained_s": skill_training(spec, args.cache_dir)})
                for pooled in (False, True):
                    t = time.perf_counter()
                    res = round_scores(feats.tokens, feats.items.kinds, feats.items.answers, base, cands, pooled)
                    score_s = time.perf_counter() - t
                    seconds = {"read_s": feats.seconds["read_s"], "features_s": feats.seconds["features_s"], "score_s": score_s}
                    for method in METHODS:
                        s = res.scores[method]
                        runs.append({"study": kind, "seed": seed, "n_images": n, "pooled": pooled, "method": method,
                                     "scores": {c: round(v, 4) for c, v in s.items()}, "order": order(s),
                                     **agreement(s, target), "vs_seed_mean": agreement(s, mean),
                                     "seconds": round(sum(seconds.values()), 2),
                                     "seconds_parts": {k: round(v, 2) for k, v in seconds.items()}})
                    if n == max(args.n_images):  # what the gains are made of, at the most images
                        probes[f"{kind}{seed}/{'pooled' if pooled else 'tokens'}"] = {
                            m: {k: round(v, 3) for k, v in p.items()} for m, p in res.probes.items()}
    summary = {}
    for key, rows in itertools.groupby(sorted(runs, key=lambda r: (r["method"], r["pooled"], r["n_images"])),
                                       key=lambda r: (r["method"], r["pooled"], r["n_images"])):
        rows = list(rows)
        summary[f"{key[0]}/{'pooled' if key[1] else 'tokens'}/{key[2]}"] = {
            "tau": _mean(r["tau"] for r in rows), "weighted_tau": _mean(r["weighted_tau"] for r in rows),
            "same_top_share": _mean(float(r["same_top"]) for r in rows),
            "winner_in_top2_share": _mean(float(r["winner_rank"] <= 2) for r in rows),
            "tau_by_study": {k: [r["tau"] for r in rows if r["study"] == k] for k in STUDIES},
            "top1_by_study": {k: [r["top1"] for r in rows if r["study"] == k] for k in STUDIES},
            "vs_seed_mean": {"tau": _mean(r["vs_seed_mean"]["tau"] for r in rows),
                             "same_top_share": _mean(float(r["vs_seed_mean"]["same_top"]) for r in rows)},
            "seconds": _mean(r["seconds"] for r in rows),
            "seconds_parts": {k: _mean(r["seconds_parts"][k] for r in rows) for k in rows[0]["seconds_parts"]},
            "runs": len(rows)}
    out = {"benchmark": "prescreen_transfer", "measured_on": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": "python benchmarks/prescreen_transfer.py --seeds " + " ".join(map(str, args.seeds))
           + " --n-images " + " ".join(map(str, args.n_images)),
           "cpus": os.cpu_count(), "torch_threads": 1, "load_avg_at_start": load_at_start,
           "load_avg_at_end": [round(x, 2) for x in os.getloadavg()], "trained_from": str(TESTBED.relative_to(ROOT)),
           "trained_measured_on": testbed.get("measured_on"), "trained_round1": trained,
           "trained_between_seeds": between_seeds(trained), "skill_training_s": skills_s,
           "summary": summary, "probes": probes, "runs": runs}
    RESULT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
