"""The paper's "Avg" column and the trial objective.

The rule (checked against ../shared/PAPER_TABLES.md, see tests/trainers/test_eval_aggregate.py):
every benchmark is put on a 1000-point scale - MME perception (out of 2000) halved, OCRBench (out of
1000) as is, the percentages x10 - and the Avg is their plain mean. It reproduces all 11 rows of
the greedy-selection table: 10 within 0.06, and A+B+F+E+D at 659.71 against the printed 660.0,
inside the 0.39 that rounding the printed inputs allows (five 1-decimal percentages at +-0.5 and
MME at +-0.25 on the 1000 scale, over 7). The high-resolution table prints six benchmarks but its
Avg is not their mean (615.7 vs 615, 597.3 vs 598): it is a 7-benchmark Avg with TextVQA not printed;
the implied TextVQA values are 60-65, in line with LLaVA-1.5-7B's.
"""
from __future__ import annotations

from collections.abc import Mapping

from trainers.data.errors import UnknownNameError
from trainers.spec import EvalSpec

PAPER_BENCHMARKS = ("gqa", "mme", "mmmu", "ocrbench", "scienceqa_img", "pope", "textvqa")
_SCALE = {"mme": 0.5, "ocrbench": 1.0}  # to the 1000-point scale; the rest are % (x10)
MINIMIZED = ("heldout_loss",)


def to_paper_scale(name: str, value: float) -> float:
    """A headline score on the paper's 1000-point scale."""
    if name not in PAPER_BENCHMARKS:
        raise UnknownNameError("paper benchmark", name, PAPER_BENCHMARKS)
    return float(value) * _SCALE.get(name, 10.0)


def paper_avg(scores: Mapping[str, float]) -> float:
    """The paper's Avg over the paper benchmarks present in `scores` (headline keys; sub-figures such
    as "pope/random/f1" are ignored)."""
    present = [b for b in PAPER_BENCHMARKS if b in scores]
    if not present:
        raise ValueError(f"paper_avg needs at least one of {', '.join(PAPER_BENCHMARKS)}; "
                         f"got {', '.join(sorted(scores)) or 'no scores'}")
    return sum(to_paper_scale(b, scores[b]) for b in present) / len(present)


def task_avg(scores: Mapping[str, float], tasks: list[str]) -> float:
    """Harness lmms-eval's Avg: the plain mean of its tasks' headline scores, in lmms-eval's units."""
    missing = [t for t in tasks if t not in scores]
    if missing or not tasks:
        raise ValueError(f"avg needs the score of every task; missing: {', '.join(missing) or 'no tasks'}")
    return sum(float(scores[t]) for t in tasks) / len(tasks)


def weighted_mean(scores: Mapping[str, float], weights: Mapping[str, float], paper_scale: bool = True) -> float:
    """sum(w * s) / sum(w); paper benchmarks enter on the 1000-point scale (so MME's 2000 points do
    not swamp the rest; not for lmms-eval's tasks, `paper_scale` False), any other score key (a
    sub-figure) as it is."""
    if not weights:
        raise ValueError("weighted_mean needs weights (eval.weights is empty)")
    missing = [k for k in weights if k not in scores]
    if missing:
        raise ValueError(f"weights name scores that were not computed: {', '.join(missing)}; "
                       f"available: {', '.join(sorted(scores))}")
    bad = [k for k, w in weights.items() if w < 0]
    if bad:
        raise ValueError(f"weights must be non-negative: {', '.join(bad)}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("weights sum to zero")
    return sum(w * (to_paper_scale(k, scores[k]) if paper_scale and k in PAPER_BENCHMARKS else float(scores[k]))
               for k, w in weights.items()) / total


def objective(scores: Mapping[str, float], eval_spec: EvalSpec) -> float:
    """The trial objective named by eval.objective: "avg", "weighted", "heldout_loss" (must be in
    `scores`, the trainer adds it) or any score key ("pope", "mme/cognition", ...)."""
    name, builtin = eval_spec.objective, eval_spec.harness == "builtin"
    if name == "avg":
        return paper_avg(scores) if builtin else task_avg(scores, eval_spec.tasks)
    if name == "weighted":
        return weighted_mean(scores, eval_spec.weights, paper_scale=builtin)
    if name in scores:
        return float(scores[name])
    if name == "heldout_loss":
        raise ValueError("objective 'heldout_loss' needs the held-out loss in the scores (the trainer adds it)")
    raise UnknownNameError("objective", name, ["avg", "weighted", "heldout_loss", *scores])


def objective_direction(name: str) -> str:
    return "minimize" if name in MINIMIZED else "maximize"
