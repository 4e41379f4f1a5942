"""Bootstrap intervals for benchmark scores and the objective, and paired comparisons.

Each benchmark is resampled on its own (stratified), by scoring groups (bench.group_key: MME's
image pairs stay whole), `resamples` times, and every replicate is scored by the benchmark's own
`summarize`, so an interval is the interval of the official figure (summarize must group items
only through self.group_key and score them through self.score_item or pure functions). Replicate b of the objective is
the objective of replicate b's scores. The resampled indices depend only on (seed, benchmark name,
number of groups): two trials evaluated on the same items draw the same resamples, so their
replicates are paired and their difference, replicate by replicate, is the paired bootstrap of the
difference (`paired`). Intervals are percentile intervals (numpy's linear quantile).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

COPY_KEY = "bootstrap_copy"  # meta key that keeps repeated draws of a group apart


def resample_indices(n_groups: int, resamples: int, seed: int, name: str) -> np.ndarray:
    """[resamples, n_groups] group indices drawn with replacement, a function of its arguments alone."""
    if n_groups <= 0:
        raise ValueError(f"{name}: nothing to resample (0 groups)")
    salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng([int(seed), salt])
    return rng.integers(0, n_groups, size=(int(resamples), n_groups))


def interval(values: Sequence[float], confidence: float) -> list[float]:
    """The central `confidence` percentile interval of bootstrap replicates."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("an interval needs at least one replicate")
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(arr, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def paired(a: Sequence[float], b: Sequence[float], confidence: float, maximize: bool = True) -> dict[str, Any]:
    """a against b on the same resamples: the interval of a - b and the probability that a is
    better (a tie replicate counts one half)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired replicates need the same non-zero length, got {x.size} and {y.size}")
    d = x - y
    gain = d if maximize else -d
    p = float(np.mean(gain > 0) + 0.5 * np.mean(gain == 0))
    return {"diff_ci": interval(d, confidence), "p_better": p}


def items_fingerprint(qids: Mapping[str, Sequence[str]]) -> str:
    """Which items (per benchmark, in order) a trial was scored on: equal fingerprints pair."""
    h = hashlib.sha256()
    for name in sorted(qids):
        h.update(name.encode() + b"\x00" + "\x01".join(map(str, qids[name])).encode() + b"\x02")
    return h.hexdigest()[:16]


def _resampling(bench, items: Sequence, copies: dict[int, int]):
    """A copy of `bench` for resampled lists: its group_key tells repeated draws of a group apart,
    and score_item (a pure function of item and prediction) is computed once per original item and
    prediction. `copies` maps id(copy) -> index of the original item."""
    base = type(bench)
    memo: dict[tuple[int, str], float] = {}

    def group_key(self, item):
        key = base.group_key(self, item)
        n = item.meta.get(COPY_KEY)
        return f"{key}#{n}" if n else key

    def score_item(self, item, prediction):
        key = (copies.get(id(item), -1), prediction)
        if key[0] < 0:
            return base.score_item(self, item, prediction)
        if key not in memo:
            memo[key] = base.score_item(self, items[key[0]], prediction)
        return memo[key]

    out = copy.copy(bench)
    out.__class__ = type(f"Resampled{base.__name__}", (base,), {"group_key": group_key, "score_item": score_item})
    return out


def benchmark_replicates(bench, items: Sequence, preds: Sequence[str], indices: np.ndarray) -> list[dict[str, float]]:
    """bench.summarize of every resample (a row of group indices)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(bench.group_key(item), []).append(i)
    members = list(groups.values())
    origin: dict[int, int] = {id(it): i for i, it in enumerate(items)}
    scorer = _resampling(bench, items, origin)
    copies: dict[tuple[int, int], Any] = {}

    def draw(i: int, n: int):
        if n == 0:
            return items[i]
        if (i, n) not in copies:
            it = items[i]
            copies[(i, n)] = dataclasses.replace(it, qid=f"{it.qid}#{n}", meta={**it.meta, COPY_KEY: n})
            origin[id(copies[(i, n)])] = i
        return copies[(i, n)]

    out = []
    for row in indices:
        seen: dict[int, int] = {}
        r_items, r_preds = [], []
        for g in row.tolist():
            n = seen.get(g, 0)
            seen[g] = n + 1
            for i in members[g]:
                r_items.append(draw(i, n))
                r_preds.append(preds[i])
        out.append(scorer.summarize(r_items, r_preds))
    return out


def n_groups(bench, items: Sequence) -> int:
    return len({bench.group_key(it) for it in items})


def bootstrap_eval(runs: Sequence[tuple[Any, Sequence, Sequence[str]]], objective: Callable[[dict], float] | None,
                   *, resamples: int, seed: int, confidence: float,
                   blind: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Intervals of every headline score and of the objective, from (bench, items, predictions)
    runs; `objective` maps a scores dict to the objective (None: no objective interval). With
    `blind` ({bench: predictions on blank images}), also the paired interval of score - blind score."""
    per_run, blind_gap = [], {}
    for bench, items, preds in runs:
        idx = resample_indices(n_groups(bench, items), resamples, seed, bench.name)
        reps = benchmark_replicates(bench, items, preds, idx)
        per_run.append(reps)
        if blind is not None and bench.name in blind:
            b_reps = benchmark_replicates(bench, items, blind[bench.name], idx)
            gaps = [r[bench.name] - q[bench.name] for r, q in zip(reps, b_reps)]
            blind_gap[bench.name] = interval(gaps, confidence)
    out: dict[str, Any] = {
        "scores_ci": {bench.name: interval([r[bench.name] for r in reps], confidence)
                      for (bench, _, _), reps in zip(runs, per_run)},
        "objective_ci": None,
    }
    meta: dict[str, Any] = {"resamples": int(resamples), "seed": int(seed), "confidence": confidence,
                            "items": items_fingerprint({b.name: [it.qid for it in its] for b, its, _ in runs}),
                            "objective": None}
    if objective is not None:
        values = []
        for b in range(resamples):
            merged: dict[str, float] = {}
            for reps in per_run:
                merged.update(reps[b])
            values.append(float(objective(merged)))
        out["objective_ci"] = interval(values, confidence)
        meta["objective"] = [round(v, 4) for v in values]
    out["bootstrap"] = meta
    if blind is not None:
        out["blind_gap_ci"] = blind_gap
    return out
