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
  d) the greedy selection of each study seed against the study file's `expect:` (answer, path and
     rounds, written from the design before any run; a mismatch fails the criterion and is reported);
  e) the wall time of the seed-0 study, skill pre-training included (fresh cache): at most 6 minutes;
  f) the permuted twin (studies/tiny_greedy_permuted.yaml: the same architectures, two skills
     swapped) meets its own expectation on every seed, and its permuted experts, probed on every
     skill, are best at the skill they were given.
A seed s sets the SFT seed, the pre-alignment seed, the data seed (which also draws the evaluation
items) and the skill pre-training seed to s; seed 0 is the study file as it is. The studies share one
cache (what two studies of the same seed share is trained once). The first seed runs alone on a
fresh cache (the main job's time), the others then run two at a time. MME and POPE are left out of
the objective (the study file says why); their scores and yes-ratios are reported with the reason.
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
STUDIES = {"main": ROOT / "studies" / "tiny_greedy.yaml", "twin": ROOT / "studies" / "tiny_greedy_permuted.yaml"}
LEFT_OUT = ("mme", "pope")  # not in the objective: yes/no questions the tiny LLM answers with one constant


def _study_yaml(workdir: Path, kind: str, seed: int) -> Path:
    path = workdir / f"{kind}_seed{seed}.yaml"
    if path.is_file():  # --keep: the study continues with the file it was created from
        return path
    spec = yaml.safe_load(STUDIES[kind].read_text())
    spec["name"] = f"{spec['name']}_seed{seed}"
    trial = spec["base_trial"]
    trial["seed"] = trial["align_seed"] = trial["skill_seed"] = seed
    trial["data"]["synthetic"]["seed"] = seed  # the data and the evaluation suite's items
    spec["search_space"] = str(ROOT / "search_spaces" / f"{spec['search_space']}.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _start_study(workdir: Path, kind: str, seed: int, cache: Path) -> subprocess.Popen:
    study = _study_yaml(workdir, kind, seed)
    link = workdir / f"{kind}{seed}" / "cache"  # a study's cache is <workdir>/cache: one for all studies
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(cache, target_is_directory=True)
    log = (workdir / f"{kind}{seed}.log").open("w")
    return subprocess.Popen(["eagle-explore", "run", str(study), "--workdir", str(workdir / f"{kind}{seed}")],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _status(workdir: Path, kind: str, seed: int) -> dict:
    study, wd = workdir / f"{kind}_seed{seed}.yaml", workdir / f"{kind}{seed}"
    out = subprocess.run(["eagle-explore", "status", str(study), "--workdir", str(wd), "--json"], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out)


def _run_two_at_a_time(workdir: Path, runs: list[tuple[str, int]], cache: Path) -> None:
    for i in range(0, len(runs), 2):
        procs = {run: _start_study(workdir, *run, cache) for run in runs[i:i + 2]}
        for (kind, seed), proc in procs.items():
            if proc.wait() != 0:
                raise SystemExit(f"study {kind} seed {seed} failed (exit {proc.returncode}); see its log")


def _wall(doc: dict) -> float:
    """First trial start to last trial end (skill pre-training happens inside the first trials)."""
    from datetime import datetime

    starts = [datetime.fromisoformat(t["datetime_start"]) for t in doc["trials"] if t["datetime_start"]]
    ends = [datetime.fromisoformat(t["datetime_complete"]) for t in doc["trials"] if t["datetime_complete"]]
    return (max(ends) - min(starts)).total_seconds()


def skill_table(cache_dir: Path, skills: dict[str, str] | None = None, seed: int = 0,
                probe_seeds: tuple[int, ...] = (0, 1)) -> dict:
    """probe[expert][skill] (mean over probe seeds: fresh data and head) for the six tiny experts,
    each pre-trained (skill seed `seed`) on its family's skill or on `skills[preset]` (a permuted
    design); per skill the `margin`: the expert given it minus the best other on the same probe seed
    (paired: the same items), the smallest over the seeds (> 0 on every seed: `owner_best`)."""
    import experts
    from trainers.skills.tasks import SKILLS, make_data
    from trainers.skills.train import DEFAULT_RECIPE as R
    from trainers.skills.train import SkillCache, probe, skill_of

    cfgs = [experts.get_preset(p) for p in experts.TINY_PRESETS]
    given = [(skills or {}).get(c.name, True) for c in cfgs]
    dirs = SkillCache(cache_dir).ensure(cfgs, seed, skills=given)
    runs = {c.name: {s: [] for s in SKILLS} for c in cfgs}
    for pseed in probe_seeds:
        data = {s: (make_data(s, R.n_train, pseed, R.image_size, "train"),
                    make_data(s, R.n_eval, pseed, R.image_size, "eval")) for s in SKILLS}
        for cfg, d in zip(cfgs, dirs):
            expert = experts.load_expert(d)
            for s in SKILLS:
                runs[cfg.name][s].append(round(probe(expert, s, pseed, data=data[s]), 3))
    table = {n: {s: round(statistics.fmean(v), 3) for s, v in row.items()} for n, row in runs.items()}
    owner = {skill_of(c, g): c.name for c, g in zip(cfgs, given)}
    margin = {s: round(min(runs[owner[s]][s][i] - max(runs[n][s][i] for n in runs if n != owner[s])
                           for i in range(len(probe_seeds))), 3) for s in SKILLS}
    best = {s: max(table, key=lambda n: table[n][s]) for s in SKILLS}
    return {"skills": {c.name: skill_of(c, g) for c, g in zip(cfgs, given)}, "probe": table,
            "probe_seeds": {"seeds": list(probe_seeds), "runs": runs}, "best_per_skill": best,
            "margin": margin, "owner_best": {s: best[s] == owner[s] and margin[s] > 0 for s in SKILLS}}


def _left_out(result: dict) -> dict:
    """MME's and POPE's scores and yes-ratio, with why the objective leaves them out."""
    scores = result["scores"]
    yes = [v for k, v in scores.items() if k.startswith("pope/") and k.endswith("/yes_ratio")]
    return {"mme": {"score": round(scores["mme"], 2), "blind": round(result["blind_scores"]["mme"], 2),
                    "acc_plus": {k.split("/")[1]: round(v, 2) for k, v in scores.items()
                                 if k.startswith("mme/") and k.endswith("/acc_plus")}},
            "pope": {"score": round(scores["pope"], 2), "blind": round(result["blind_scores"]["pope"], 2),
                     "yes_ratio": round(statistics.fmean(yes), 2) if yes else None},
            "gqa_exists": round(scores.get("gqa/semantic/exists", float("nan")), 2),
            "reason": "yes/no questions whose answer turns on a word of the question: the 2-layer tiny LLM "
                      "answers them with a guess that does not follow the image (MME acc+ 0: one answer per "
                      "image pair; POPE and GQA's existence items at or below chance)"}


def _best_vs_blind(doc: dict) -> dict:
    best = doc["best"]
    trial = next(t for t in doc["trials"] if t["number"] == best["number"])
    gap = trial.get("blind_gap_ci") or {}
    from trainers.trial_dir import read_result

    result = read_result(trial["trial_dir"])
    rows = {b: {"score": round(result["scores"][b], 2), "ci": [round(x, 2) for x in (trial["scores_ci"] or {}).get(b, [])],
                "blind": round(result["blind_scores"][b], 2), "gap_ci": [round(x, 2) for x in ci],
                "beats_blind": ci[0] > 0} for b, ci in gap.items() if b not in LEFT_OUT}
    for b, why in (result.get("blind_undefined") or {}).items():  # never counted as beating blind
        if b not in LEFT_OUT:
            rows[b] = {"score": round(result["scores"][b], 2), "blind": round(result["blind_scores"][b], 2),
                       "beats_blind": None, "blind_undefined": why}
    return {"experts": best["experts"], "value": best["value"], "benchmarks": rows,
            "n_beating_blind": sum(r["beats_blind"] is True for r in rows.values()),
            "left_out_of_objective": _left_out(result)}


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
    first = args.seeds[0]
    runs = [("main", first)] + [(k, s) for s in args.seeds for k in STUDIES if (k, s) != ("main", first)]
    loads = {} if args.keep else {"main0": os.getloadavg()}  # the first main study alone, on a fresh cache
    cache = wd / "cache"
    cache.mkdir(exist_ok=True)
    if not args.keep:
        _run_two_at_a_time(wd, runs[:1], cache)
        loads["rest"] = os.getloadavg()
        _run_two_at_a_time(wd, runs[1:], cache)
    docs = {kind: {s: _status(wd, kind, s) for s in args.seeds} for kind in STUDIES}
    main_docs = docs["main"]
    wall = _wall(main_docs[first])
    rounds = [_round(main_docs[s], 1) for s in args.seeds]
    cands = sorted(set.intersection(*(set(r) for r in rounds)))
    means = {c: statistics.fmean(r[c] for r in rounds) for c in cands}
    spread = statistics.fmean(statistics.stdev(r[c] for r in rounds) for c in cands) if len(rounds) > 1 else None
    gap = max(means.values()) - min(means.values()) if means else None
    saved = wd / "skill_tables.json"
    twin_skills = {e["preset"]: e["skill"] for e in yaml.safe_load(STUDIES["twin"].read_text())["base_trial"]["experts"]
                   if isinstance(e["skill"], str)}
    tables = json.loads(saved.read_text()) if args.keep and saved.is_file() else \
        {"main": skill_table(cache, seed=first), "twin": skill_table(cache, twin_skills, seed=first)}
    saved.write_text(json.dumps(tables))
    blind = _best_vs_blind(main_docs[first])
    met = {kind: all((docs[kind][s]["expectation"] or {}).get("met") is True for s in args.seeds) for kind in STUDIES}
    out = {
        "benchmark": "testbed", "measured_on": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/testbed.py --seeds " + " ".join(map(str, args.seeds)),
        "studies": {k: str(v.relative_to(ROOT)) for k, v in STUDIES.items()},
        "cpus": os.cpu_count(), "load_avg_at_start": {k: [round(x, 2) for x in v] for k, v in loads.items()},
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": {k: {s: round(_wall(docs[k][s]), 1) for s in args.seeds} for k in STUDIES},
        "a_best_vs_blind": blind, "b_skill_table": tables["main"], "f_twin_skill_table": tables["twin"],
        "c_round1": {"means": {c: round(v, 2) for c, v in means.items()}, "gap": gap, "seed_spread": spread,
                     "per_seed": rounds},
        "f_twin_rounds": [{**_round(docs["twin"][s], 0), **_round(docs["twin"][s], 1)} for s in args.seeds],
        "d_selections": {k: {s: docs[k][s]["best"]["experts"] for s in args.seeds} for k in STUDIES},
        "d_expectation": {k: {s: docs[k][s]["expectation"] for s in args.seeds} for k in STUDIES},
        "criteria": {"a": blind["n_beating_blind"] >= 4, "b": all(tables["main"]["owner_best"].values()),
                     "c": gap is not None and spread is not None and gap > 2 * spread,
                     "d": met["main"], "e": wall <= 360,
                     "f": met["twin"] and all(tables["twin"]["owner_best"][s] for s in set(twin_skills.values()))},
    }
    res = ROOT / "benchmarks" / "results" / "testbed.json"
    res.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
