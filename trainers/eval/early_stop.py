"""Early stop of an evaluation: is this model clearly behind a reference on the same items?

The test is the one-sided Wilcoxon signed-rank test over paired per-item scores (as Optuna's
WilcoxonPruner uses over problem instances): zero differences split between the signs ("zsplit",
so ties make it cautious), average ranks for equal |differences|, the normal approximation with
the tie correction. It needs no scipy (not a dependency); tests check it against scipy's."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def wilcoxon_less(diffs: Sequence[float]) -> float:
    """p-value of H1 "the differences are centred below zero" (zsplit, normal approximation)."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return 1.0
    ranks = _average_ranks(np.abs(d))
    r_plus = float(ranks[d > 0].sum() + ranks[d == 0].sum() / 2.0)
    mean = n * (n + 1) / 4.0
    _, counts = np.unique(ranks, return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((counts ** 3 - counts).sum()) / 48.0
    if var <= 0:  # not reached for n >= 1; kept so a bad input never divides by zero
        return 1.0
    z = (r_plus - mean) / math.sqrt(var)
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class EarlyStop:
    """Collects this model's per-item scores next to the reference's and says when to stop.
    `maximize` False (a loss-like score) flips the sign of the differences."""

    def __init__(self, reference: Mapping[str, Mapping[str, float]], alpha: float, min_items: int,
                 every: int, maximize: bool = True) -> None:
        self.reference, self.alpha, self.min_items, self.every = reference, alpha, min_items, every
        self.sign = 1.0 if maximize else -1.0
        self.diffs: list[float] = []
        self.items = 0  # scored by this model (paired or not)
        self._tested_at = 0
        self.p_value: float | None = None

    def add(self, bench: str, qids: Sequence[str], scores: Sequence[float]) -> bool:
        """Record scored items; True when the model is behind the reference at level alpha."""
        ref = self.reference.get(bench, {})
        for qid, score in zip(qids, scores):
            self.items += 1
            if str(qid) in ref:
                self.diffs.append(self.sign * (float(score) - float(ref[str(qid)])))
        n = len(self.diffs)
        if n < self.min_items or n - self._tested_at < self.every and self._tested_at:
            return False
        self._tested_at = n
        self.p_value = wilcoxon_less(self.diffs)
        return self.p_value < self.alpha
