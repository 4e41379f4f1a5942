"""A closed-form probe: kernel ridge regression from a representation to each item's answer
(one-hot), scored by its exact leave-one-out predictions (no SGD, no held-out split), one task per
item kind whose answer the image alone decides."""
from __future__ import annotations

from dataclasses import dataclass

import torch

# kinds whose answer follows from the image: a yes/no kind's answer turns on a word of the question,
# a table cell's on the row and column asked
IMAGE_KINDS = ("colour", "shape", "count", "word", "number", "choice")
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # times the kernel's mean diagonal


@dataclass(frozen=True)
class Task:
    kind: str
    index: torch.Tensor  # long [n]: the items of this kind
    labels: torch.Tensor  # long [n]: class id of each item's answer


def tasks_of(kinds: list[str | None], answers: list[str], min_items: int = 8) -> list[Task]:
    """One task per image-decided kind with at least `min_items` items and two answers."""
    out = []
    for kind in IMAGE_KINDS:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        classes = sorted({answers[i] for i in idx})
        if len(idx) >= min_items and len(classes) > 1:
            out.append(Task(kind, torch.tensor(idx), torch.tensor([classes.index(answers[i]) for i in idx])))
    return out


def loo_fit(kernel: torch.Tensor, labels: torch.Tensor, lambdas=LAMBDAS) -> dict[str, float]:
    """Kernel ridge on one-hot `labels` with an intercept (a constant added to the kernel), lambda
    picked by the leave-one-out squared error: its LOO accuracy, LOO r2 (1 - LOO squared error over
    the labels' variance: graded where accuracy moves by whole items) and lambda. The LOO residual
    of a linear smoother H is (y - Hy) / (1 - H_ii); one eigendecomposition serves every lambda."""
    n = len(labels)
    k = kernel.double()
    scale = k.diagonal().mean().clamp_min(1e-12)
    k = k / scale + 1.0  # + 1: an intercept, as a constant feature on the signal's scale
    y = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).double()
    s, u = torch.linalg.eigh(k)
    s = s.clamp_min(0)
    uty = u.T @ y
    best = None
    for lam in lambdas:
        f = s / (s + lam)
        h_diag = (u * u) @ f
        resid = (y - u @ (f[:, None] * uty)) / (1 - h_diag).clamp_min(1e-9)[:, None]
        mse = float(resid.pow(2).mean())
        acc = float(((y - resid).argmax(1) == labels).double().mean())
        if best is None or mse < best[0]:
            best = (mse, acc, lam)
    assert best is not None and n > 0
    var = float((y - y.mean(0)).pow(2).mean())
    return {"accuracy": best[1], "r2": 1 - best[0] / var if var > 0 else 0.0, "lambda": best[2]}


def probe(kernel: torch.Tensor, tasks: list[Task]) -> dict[str, float]:
    """Per task its LOO accuracy, with `accuracy` over all items and `r2` the tasks' mean LOO r2."""
    fits = {t.kind: loo_fit(kernel[t.index][:, t.index], t.labels) for t in tasks}
    out = {k: f["accuracy"] for k, f in fits.items()}
    total = sum(len(t.index) for t in tasks)
    out["accuracy"] = sum(fits[t.kind]["accuracy"] * len(t.index) for t in tasks) / total if total else 0.0
    out["r2"] = sum(f["r2"] for f in fits.values()) / len(fits) if fits else 0.0
    return out
