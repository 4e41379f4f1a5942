"""Scores of a greedy round's candidates from features alone: how much each adds to the current
mixture. A mixture's kernel is the sum of its experts' kernels (each of mean diagonal 1): the linear
kernel of their channel-concatenated tokens with every expert's block weighed alike.

    probe_gain        LOO accuracy of the ridge probe (trainers/prescreen/probe.py) on mixture +
                      candidate minus on the mixture
    probe_gain_r2     the same difference of the probe's LOO r2 (graded, less item-count noise)
    alignment_gain    the same difference of kernel-target alignment (CKA with the answers' one-hot
                      kernel), averaged over the item kinds
    complementarity   1 - max CKA(candidate, each mixture expert): new information, blind to the task
    probe_alone       the candidate's own probe accuracy: relevance without the mixture
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.prescreen.probe import IMAGE_KINDS, Task, probe, tasks_of
from trainers.prescreen.similarity import centred_kernel, kernel_cka

METHODS = ("probe_gain", "probe_gain_r2", "alignment_gain", "complementarity", "probe_alone")


@dataclass
class RoundScores:
    scores: dict[str, dict[str, float]]  # method -> candidate -> score (higher: expected to add more)
    probes: dict[str, dict[str, float]]  # mixture name -> the probe's per-kind accuracy, accuracy and r2


def alignment(kernel: torch.Tensor, tasks: list[Task]) -> float:
    vals = []
    for t in tasks:
        y = torch.nn.functional.one_hot(t.labels).double()
        vals.append(kernel_cka(kernel[t.index][:, t.index], y @ y.T))
    return sum(vals) / len(vals) if vals else 0.0


def round_scores(tokens: dict[str, torch.Tensor], kinds: list[str | None], answers: list[str],
                 base: list[str], candidates: list[str], pooled: bool = False) -> RoundScores:
    """Every method's score of each candidate beside `base` (expert labels of `tokens`), on the
    items the probe can use (all of them where none can: then only complementarity is informative)."""
    keep = [i for i, k in enumerate(kinds) if k in IMAGE_KINDS] or list(range(len(kinds)))
    kernels = {x: centred_kernel(tokens[x][keep], pooled) for x in dict.fromkeys([*base, *candidates])}
    tasks = tasks_of([kinds[i] for i in keep], [answers[i] for i in keep])
    k_base = sum(kernels[x] for x in base)
    p_base, a_base = probe(k_base, tasks), alignment(k_base, tasks)
    scores: dict[str, dict[str, float]] = {m: {} for m in METHODS}
    probes = {"+".join(base): p_base}
    for c in candidates:
        k_mix = k_base + kernels[c]
        p_mix = probes["+".join([*base, c])] = probe(k_mix, tasks)
        scores["probe_gain"][c] = p_mix["accuracy"] - p_base["accuracy"]
        scores["probe_gain_r2"][c] = p_mix["r2"] - p_base["r2"]
        scores["alignment_gain"][c] = alignment(k_mix, tasks) - a_base
        scores["complementarity"][c] = 1 - max(kernel_cka(kernels[c], kernels[b]) for b in base)
        scores["probe_alone"][c] = probe(kernels[c], tasks)["accuracy"]
    return RoundScores(scores, probes)


def order(scores: dict[str, float]) -> list[str]:
    """Candidates best first (ties by name, so the order is stable)."""
    return sorted(scores, key=lambda c: (-scores[c], c))
