"""Candidate statistics over stored trials: seed mean and spread, the bootstrap interval, paired
comparisons with a leader and statistical ties. One code path for the greedy decision, the
leaderboard, export, live progress and MLflow, so they all show the same numbers.

A trial's bootstrap replicates of its objective (trainers/eval/bootstrap.py) are kept in the study
database (system attr BOOTSTRAP_ATTR). A candidate's replicate b is the mean, over a resample of its
seeds (drawn with replacement, deterministic per candidate), of its trials' replicate b: the
interval then holds item noise and, with repeats, seed noise. A trial without replicates (no
benchmarks, an old result) counts as its value in every replicate."""
from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainers.eval.bootstrap import interval, paired

from explorer.study.handle import StoredStudy

TIE_ATTR = "eagle:tie_threshold"  # study system attr: the study file's strategy.tie_threshold
IMPROVEMENT_ATTR = "eagle:improvement"  # study system attr: the study file's strategy.improvement (greedy)
BOOTSTRAP_ATTR = "eagle:bootstrap"  # trial system attr: {"items", "confidence", "objective": [..]}
STAT_ATTRS = ("objective_ci", "scores_ci", "blind_scores", "blind_objective", "blind_gap_ci",
              "scores_undefined", "blind_undefined")  # trial user attrs
DEFAULT_CONFIDENCE = 0.95
DEFAULT_TIE_THRESHOLD = 0.05  # tied with the leader when P(it beats the leader) >= this
_FLAT = 1000  # replicates for a candidate whose trials carry none


def tie_threshold(study) -> float:
    attrs = StoredStudy.of(study).system_attrs()
    return float(attrs.get(TIE_ATTR, DEFAULT_TIE_THRESHOLD))


def bootstrap_record(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a trial's result.json gives the database: its objective replicates and their pairing."""
    meta = (result or {}).get("bootstrap") or {}
    if not meta.get("objective"):
        return None
    return {"items": meta.get("items"), "confidence": meta.get("confidence", DEFAULT_CONFIDENCE),
            "objective": list(meta["objective"])}


def _record(trial) -> dict[str, Any] | None:
    rec = trial.system_attrs.get(BOOTSTRAP_ATTR)
    return rec if isinstance(rec, dict) and rec.get("objective") else None


def _seed_rng(label: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little"))


def candidate(label: str, trials: Sequence, planned: int | None = None) -> dict[str, Any]:
    """Statistics of one candidate (a configuration) from its COMPLETE trials."""
    values = [float(t.value) for t in trials]
    n = len(values)
    out: dict[str, Any] = {"label": label, "n": n, "planned": max(planned or n, n),
                           "mean": statistics.fmean(values) if values else math.nan,
                           "std": statistics.stdev(values) if n > 1 else None,
                           "values": values, "trials": sorted(t.number for t in trials),
                           "ci": None, "paired_items": None, "confidence": DEFAULT_CONFIDENCE}
    out["partial"] = out["n"] < out["planned"]
    if not values:
        out["replicates"] = None
        return out
    recs = [_record(t) for t in trials]
    lengths = {len(r["objective"]) for r in recs if r}
    size = lengths.pop() if len(lengths) == 1 else _FLAT
    rows = np.array([r["objective"] if r and len(r["objective"]) == size else [v] * size
                     for r, v in zip(recs, values)], dtype=float)
    if n > 1:
        pick = _seed_rng(label).integers(0, n, size=(size, n))
        reps = rows[pick, np.arange(size)[:, None]].mean(axis=1)
    else:
        reps = rows[0]
    items = {r.get("items") for r in recs if r}
    out["paired_items"] = items.pop() if len(items) == 1 and all(recs) else None
    out["confidence"] = next((float(r["confidence"]) for r in recs if r), DEFAULT_CONFIDENCE)
    out["replicates"] = reps
    if any(recs) or n > 1:
        out["ci"] = interval(reps, out["confidence"])
    return out


def compare(cands: list[dict[str, Any]], maximize: bool = True,
            threshold: float = DEFAULT_TIE_THRESHOLD) -> dict[str, Any] | None:
    """Rank scored candidates by mean (equal means keep the earlier one), compare each with the
    leader on paired replicates (`diff_ci`, `p_beats_leader`) and mark ties (in place). Returns the
    leader, or None when no candidate has a value."""
    scored = [c for c in cands if c["n"] > 0]
    if not scored:
        return None
    sign = 1 if maximize else -1
    leader = scored[0]
    for c in scored[1:]:
        if sign * c["mean"] > sign * leader["mean"]:
            leader = c
    for c in cands:
        c.update(leader=c is leader, tied=False, diff=None, diff_ci=None, p_beats_leader=None, paired=None)
        if c["n"] == 0 or c is leader:
            continue
        c["diff"] = c["mean"] - leader["mean"]
        a, b = c["replicates"], leader["replicates"]
        if len(a) == len(b):
            res = paired(a, b, c["confidence"], maximize)
            c["diff_ci"], c["p_beats_leader"] = res["diff_ci"], res["p_better"]
        else:
            c["p_beats_leader"] = 0.5 if c["mean"] == leader["mean"] else float(sign * c["diff"] > 0)
        c["paired"] = c["paired_items"] is not None and c["paired_items"] == leader["paired_items"]
        c["tied"] = c["p_beats_leader"] >= threshold
    leader["tied"] = any(c["tied"] for c in cands)
    return leader


def improves(new: dict[str, Any], old: dict[str, Any] | None, maximize: bool, rule: str) -> bool:
    """Whether a round's leader `new` improves on the best so far `old`: by its mean ("mean"), or
    ("interval") only when the paired interval of new - old excludes 0 on the better side.
    Candidates without paired replicates are compared by their means under either rule."""
    if old is None:
        return True
    sign = 1 if maximize else -1
    a, b = new.get("replicates"), old.get("replicates")
    if rule == "mean" or a is None or b is None or len(a) != len(b):
        return sign * new["mean"] > sign * old["mean"]
    lo, hi = paired(a, b, new["confidence"], maximize)["diff_ci"]
    return lo > 0 if maximize else hi < 0


def improvement_rule(study) -> str:
    """The study file's strategy.improvement ("mean" for a study stored before it was recorded)."""
    return str(StoredStudy.of(study).system_attrs().get(IMPROVEMENT_ATTR, "mean"))


def tied_labels(cands: list[dict[str, Any]]) -> list[str]:
    """The statistically tied leaders (leader first), empty when the leader is clear."""
    lead = [c for c in cands if c.get("leader")]
    if not lead or not lead[0]["tied"]:
        return []
    others = sorted((c for c in cands if c.get("tied") and not c.get("leader")), key=lambda c: -c["p_beats_leader"])
    return [_name(lead[0])] + [_name(c) for c in others]


def _name(c: dict[str, Any]) -> str:
    return c.get("experts") or c["label"]


def public(c: dict[str, Any]) -> dict[str, Any]:
    """A candidate's statistics without its replicate array (JSON, user attrs, MLflow)."""
    return {k: v for k, v in c.items() if k != "replicates"}


def tie_note(cands: list[dict[str, Any]]) -> str | None:
    """'A+B+F ~ A+B+E (P=0.42)': a tie in words, for progress lines and path entries."""
    tied = tied_labels(cands)
    if not tied:
        return None
    by = {_name(c): c for c in cands}
    rest = ", ".join(f"{t} (P={by[t]['p_beats_leader']:.2f})" for t in tied[1:])
    return f"{tied[0]} tied with {rest}"


def interval_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """result.json's intervals and blind control as MLflow metrics: ci/objective/lo|hi,
    ci/score/<bench>/lo|hi, blind/<bench>, blind/objective."""
    out: dict[str, Any] = {}
    if result.get("objective_ci"):
        out["ci/objective/lo"], out["ci/objective/hi"] = result["objective_ci"]
    for bench, (lo, hi) in (result.get("scores_ci") or {}).items():
        out[f"ci/score/{bench}/lo"], out[f"ci/score/{bench}/hi"] = lo, hi
    for bench, value in (result.get("blind_scores") or {}).items():
        out[f"blind/{bench}"] = value
    if result.get("blind_objective") is not None:
        out["blind/objective"] = result["blind_objective"]
    return out
