"""Study cost: the greedy study on the CPU testbed three ways, for several study seeds.

- naive: full fidelity, and every trial pre-aligns its own experts (its own cache directory);
- default: today's default (the study's stage-1 cache, full fidelity);
- savings: every saving that exists: the shared caches, multi-fidelity rounds and the early stop
  of a rung's evaluation (the fidelity block of studies/tiny_greedy_fidelity.yaml, or --fidelity).
compute_s is the CPU-seconds of every trial process (utime + stime of the waited-for children:
the launcher, torchrun and its ranks), so the figure does not depend on how busy the machine is.
A study seed is the base trial's seed. kendall_tau_rungs: per round, Kendall's tau between the
savings run's lowest-rung ranking and the naive run's full-fidelity ranking of the same candidates
(mean over the seeds whose round had the same candidates; null where none had).
Prints ONE JSON line and writes benchmarks/results/study_cost.json.
It also estimates the ratio for the paper-scale study with `eagle-explore plan` (paper_plan).
`nice -n 10 python -m benchmarks.study_cost [STUDY.yaml] [--seeds 0,1,2] [--quick] [--fidelity JSON] [--no-paper-plan]`"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIDELITY_STUDY = ROOT / "studies" / "tiny_greedy_fidelity.yaml"
VARIANTS = ("naive", "default", "savings")


class StudyCostRunner:
    """The real trial runner. naive: each trial with a cache directory of its own (nothing shared).
    Every variant reads the skilled experts' weights (the stand-in for downloaded ones, not part of
    the protocol) from one directory trained before the clocks start."""

    def __init__(self, own_cache: bool, skills: Path) -> None:
        from explorer.backends.local import LocalRunner

        self.inner, self.own_cache, self.skills = LocalRunner(), own_cache, skills

    def __call__(self, job):
        from trainers.launch import default_cache_dir
        from trainers.spec import TrialSpec

        spec = yaml.safe_load(Path(job.spec_path).read_text())
        if self.own_cache:
            spec["cache_dir"] = str(Path(job.trial_dir) / "own_cache")
            Path(job.spec_path).write_text(yaml.safe_dump(spec, sort_keys=False))
        cache = default_cache_dir(TrialSpec.model_validate(spec), Path(job.trial_dir))
        cache.mkdir(parents=True, exist_ok=True)
        link = cache / "skills"
        if not link.is_symlink() and not link.exists():  # an absolute target: a relative one would dangle
            link.symlink_to(self.skills.resolve(), target_is_directory=True)
        return self.inner(job)

    def terminate_all(self) -> None:
        self.inner.terminate_all()


def train_skills(path: Path, root: Path) -> Path:
    """The study's skilled experts, trained once into root/skills (in this process, before timing)."""
    from explorer.study.load import parse_study
    from trainers.spec import TrialSpec
    from trainers.stages.recipes import resolve_experts

    spec = TrialSpec.model_validate(parse_study(yaml.safe_load(path.read_text()), str(path), path.parent)
                                    .base_trial_data)
    resolve_experts(spec, root)
    return root / "skills"


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def study_data(path: Path, variant: str, seed: int, quick: bool, fidelity: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    data["name"] = f"{data['name']}_{variant}_s{seed}"
    strategy = data["strategy"]
    strategy.pop("fidelity", None)
    if variant == "savings":
        strategy["fidelity"] = copy.deepcopy(fidelity)
    if quick:  # rounds 0 and 1 only
        strategy["max_size"] = len(strategy.get("base", ["A", "B"])) + 1
    base = data["base_trial"]
    if isinstance(base, str):
        base = yaml.safe_load((path.parent / base).read_text())
    base = copy.deepcopy(base)
    base["seed"] = seed
    if variant == "savings":  # stage 2 on the shared expert-feature cache as well
        base.setdefault("train", {})["feature_cache"] = {"enabled": True}
    elif variant == "naive":
        base.setdefault("train", {}).pop("feature_cache", None)
    data["base_trial"] = base
    return data


def run_variant(path: Path, variant: str, seed: int, *, quick: bool, fidelity: dict[str, Any], work: Path,
                skills: Path) -> dict:
    from explorer.controller import run_study
    from explorer.study.storage import default_storage_url
    from explorer.study.load import parse_study
    work.mkdir(parents=True, exist_ok=True)
    spec = parse_study(study_data(path, variant, seed, quick, fidelity), str(path), path.parent)
    runner = StudyCostRunner(variant == "naive", skills)
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    out = run_study(spec, default_storage_url(work), work, runner=runner)
    if not out.finished or out.n_failed or out.best_experts is None:
        raise RuntimeError(f"{variant} seed {seed}: study did not finish cleanly ({out.stopped_reason or ''}; "
                           f"{out.n_failed} failed trial attempts; logs under {work})")
    return {"compute_s": children_cpu_s() - cpu0, "wall_s": time.perf_counter() - t0, "selected": out.best_experts,
            "path": out.path, "trials": out.n_trials}


def kendall_tau(a: dict[str, float], b: dict[str, float]) -> float | None:
    """tau-b over the keys both rank (None below two)."""
    keys = sorted(set(a) & set(b))
    conc = disc = ties_a = ties_b = 0
    for i, x in enumerate(keys):
        for y in keys[i + 1:]:
            da, db = a[x] - a[y], b[x] - b[y]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + ties_a) * (conc + disc + ties_b)) ** 0.5
    return None if len(keys) < 2 or denom == 0 else (conc - disc) / denom


def rung_taus(naive: list[dict], savings: list[dict]) -> list[float | None]:
    """Per round: mean over seeds of tau(savings' lowest rung, naive's full fidelity)."""
    per_round: dict[int, list[float]] = {}
    rounds = max((len(p) for p in naive), default=0)
    for n_path, s_path in zip(naive, savings):
        for n_entry, s_entry in zip(n_path, s_path):
            full = {c["experts"]: c["mean"] for c in n_entry["candidates"] if c["n"]}
            low = (s_entry.get("rungs") or [{}])[0]
            if set(low) == set(full):
                tau = kendall_tau(low, full)
                if tau is not None:
                    per_round.setdefault(n_entry["round"], []).append(tau)
    return [round(sum(v) / len(v), 3) if (v := per_round.get(r)) else None for r in range(rounds)]


PAPER_STUDY = ROOT / "studies" / "eagle_greedy_fidelity.yaml"


def paper_plan() -> dict[str, Any]:
    """The ratio `eagle-explore plan` estimates for the paper-scale greedy study with its shipped
    fidelity block (studies/eagle_greedy_fidelity.yaml): GPU-hours with the stage-1 cache and rungs
    over GPU-hours at full fidelity without the cache."""
    from explorer.plan import plan_study
    from explorer.study.load import load_study
    from trainers.estimate.arch_profiles import default_cache_path
    from trainers.estimate.cost import Assumptions

    spec = load_study(PAPER_STUDY)
    tot = plan_study(spec, Assumptions(gpus=spec.resources.nproc_per_trial), default_cache_path())["total_gpu_hours"]
    return {"study": str(PAPER_STUDY.relative_to(ROOT)), "fidelity": spec.strategy.fidelity.model_dump(exclude_defaults=True),
            "gpu_hours": tot, "ratio": tot.get("ratio_to_naive"), "ratio_fidelity_alone": tot.get("ratio_fidelity_alone")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", nargs="?", default=str(ROOT / "studies" / "tiny_greedy.yaml"))
    ap.add_argument("--seeds", default="0,1,2", help="study seeds (the base trial's seed), comma-separated")
    ap.add_argument("--quick", action="store_true", help="rounds 0 and 1 only (base + one expert)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workdir", default=None, help="keep the studies here (default: a temporary directory)")
    ap.add_argument("--no-paper-plan", action="store_true", help="skip the paper-scale plan estimate")
    ap.add_argument("--fidelity", default=None, help="the savings' strategy.fidelity block as JSON (default: "
                                                     "studies/tiny_greedy_fidelity.yaml's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "study_cost.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not seeds:
        ap.error(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})" if unknown else "--seeds: none given")
    try:
        fidelity = (json.loads(args.fidelity) if args.fidelity
                    else yaml.safe_load(FIDELITY_STUDY.read_text())["strategy"]["fidelity"])
    except json.JSONDecodeError as err:
        ap.error(f"--fidelity: not JSON: {err}")
    path = Path(args.study).resolve()
    from explorer.study.spec import StudyError
    from explorer.study.load import parse_study
    try:  # every variant's study is checked before anything runs
        for v in variants:
            parse_study(study_data(path, v, seeds[0], args.quick, fidelity), str(path), path.parent)
    except StudyError as err:
        ap.error(str(err).splitlines()[0])
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="study-cost-") as tmp:
        root = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        skills = train_skills(path, root)
        for seed in seeds:
            for v in variants:
                runs[v].append(run_variant(path, v, seed, quick=args.quick, fidelity=fidelity, work=root / v / f"s{seed}", skills=skills))
    fig: dict[str, Any] = {"benchmark": "study_cost", "study": str(path.relative_to(ROOT) if path.is_relative_to(ROOT)
                                                                     else path),
                           "seeds": seeds, "quick": args.quick, "fidelity": fidelity,
                           "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    for v, rs in runs.items():
        fig[v] = {"compute_s": round(sum(r["compute_s"] for r in rs), 1),
                  "wall_s": round(sum(r["wall_s"] for r in rs), 1),
                  "trials": [r["trials"] for r in rs], "selected": [r["selected"] for r in rs]}
    if "naive" in runs and "savings" in runs:
        fig["ratio"] = round(fig["savings"]["compute_s"] / fig["naive"]["compute_s"], 4)
        fig["same_selection"] = fig["savings"]["selected"] == fig["naive"]["selected"]
        fig["kendall_tau_rungs"] = rung_taus([r["path"] for r in runs["naive"]], [r["path"] for r in runs["savings"]])
    if not args.no_paper_plan:
        fig["paper_plan"] = paper_plan()
    line = json.dumps(fig)
    print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"measured_on": time.strftime("%Y-%m-%d"), **fig}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
