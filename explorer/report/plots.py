"""The study's figures as PNG files (matplotlib, no display): the greedy path per round, score
against cost with its Pareto front, and per-benchmark bars of the leading candidates.

Each function takes plain rows (built by explorer.report.artifacts from the study database) and writes
one PNG; intervals are drawn when the rows carry them (`lo`/`hi`), else the seed spread (`std`)."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

_DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, also without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=_DPI)
    tmp.replace(path)  # a reader (the MLflow UI) never sees half a file
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _error(row: dict[str, Any]) -> tuple[float, float] | None:
    """(below, above) the value: the interval when there is one, else the seed spread."""
    if row.get("lo") is not None and row.get("hi") is not None:
        return max(row["value"] - row["lo"], 0.0), max(row["hi"] - row["value"], 0.0)
    if row.get("n", 1) > 1 and row.get("std"):
        return row["std"], row["std"]
    return None


def greedy_path(rounds: list[dict[str, Any]], objective: str, maximize: bool, path: Path, title: str) -> Path:
    """`rounds`: [{"round", "candidates": [{"experts", "value", lo/hi or std, n}], "best": experts,
    "answer": whether the round's kept set is the study's answer}]. Every candidate is a dot in its
    round, a dropped one labelled with the expert it tried; the kept sets are joined by the path line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rounds) + 2), 4.2))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.92)
    xs, ys = [], []
    for r in rounds:
        for c in r["candidates"]:
            kept = c["experts"] == r.get("best")
            err = _error(c)
            ax.errorbar([r["round"]], [c["value"]], yerr=None if err is None else [[err[0]], [err[1]]],
                        fmt="o" if kept else ".", color="C0" if kept else "0.55", capsize=3,
                        markersize=7 if kept else 5, zorder=3 if kept else 2)
            if kept:
                xs.append(r["round"])
                ys.append(c["value"])
                ax.annotate(c["experts"], (r["round"], c["value"]), textcoords="offset points", xytext=(6, 6),
                            fontsize=8, color="C0")
                if r.get("answer"):
                    ax.plot([r["round"]], [c["value"]], "*", color="C3", markersize=14, zorder=4, label="study's answer")
            else:  # dropped: the expert it added to the previous round's kept set
                ax.annotate(_added(c["experts"], rounds, r["round"]), (r["round"], c["value"]), textcoords="offset points",
                            xytext=(6, -3), fontsize=7, color="0.45")
    if xs:
        ax.plot(xs, ys, "-", color="C0", alpha=0.7, label="kept set")
        ax.legend(loc="best", fontsize=8)
    ax.margins(x=0.12, y=0.15)  # room for the labels of the first and last rounds
    ax.set_xticks([r["round"] for r in rounds])
    ax.set_xlabel("greedy round")
    ax.set_ylabel(objective)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _added(experts: str, rounds: list[dict[str, Any]], rnd: int) -> str:
    """"+C" for A+B+C in the round after A+B was kept; the whole set when there is no previous round."""
    before = next((r.get("best") for r in rounds if r["round"] == rnd - 1), None)
    extra = [e for e in experts.split("+") if before and e not in before.split("+")]
    return "+" + "+".join(extra) if extra else experts


def pareto(points: list[dict[str, Any]], objective: str, maximize: bool, *, cost_label: str, path: Path,
           title: str) -> Path:
    """`points`: [{"label", "cost", "value"}]; the front joins the points no other beats on both."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)
    front = pareto_front(points, maximize)
    ax.scatter([p["cost"] for p in points], [p["value"] for p in points], color="0.55", s=22, zorder=2)
    if front:
        ax.plot([p["cost"] for p in front], [p["value"] for p in front], "o-", color="C0", zorder=3,
                label="Pareto front")
        for p in front:
            ax.annotate(p["label"], (p["cost"], p["value"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(cost_label)
    ax.set_ylabel(objective)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pareto_front(points: list[dict[str, Any]], maximize: bool) -> list[dict[str, Any]]:
    """The points no other one beats (as good on value and cost, better on one), cheapest first."""
    sign = 1 if maximize else -1
    front = []
    for p in points:
        dominated = any(
            q is not p and sign * q["value"] >= sign * p["value"] and q["cost"] <= p["cost"]
            and (q["value"] != p["value"] or q["cost"] != p["cost"])
            for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: p["cost"])


def benchmark_bars(rows: list[dict[str, Any]], benchmarks: list[str], path: Path, title: str) -> Path:
    """`rows`: [{"label", "scores": {bench: value}}], leading candidates first; one panel per
    benchmark (their scales differ: MME in the thousands, the rest in percent)."""
    plt = _pyplot()
    n = max(len(benchmarks), 1)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.1 * cols, 2.6 * nrows + 0.6), squeeze=False)
    for i, bench in enumerate(benchmarks):
        ax = axes[i // cols][i % cols]
        vals = [r["scores"].get(bench) for r in rows]
        shown = [(j, v) for j, v in enumerate(vals) if v is not None]
        ax.bar([j for j, _ in shown], [v for _, v in shown], color=[f"C{j % 10}" for j, _ in shown])
        if shown:
            low, high = min(v for _, v in shown), max(v for _, v in shown)
            pad = (high - low) * 0.5 or abs(high) * 0.05 or 1.0
            ax.set_ylim(low - pad, high + pad)  # the differences, not the distance from zero
        ax.set_title(bench, fontsize=9)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(benchmarks), nrows * cols):
        axes[k // cols][k % cols].axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{j % 10}") for j in range(len(rows))]
    fig.legend(handles, [r["label"] for r in rows], loc="lower center", ncol=min(len(rows), 4), fontsize=8)
    fig.suptitle(title, fontsize=10)
    # fixed margins: a tight layout measures every label and costs seconds on a busy machine
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1 + 0.05 / nrows, top=0.86 if nrows == 1 else 0.9,
                        hspace=0.35, wspace=0.3)
    return _save(fig, path)



def visual_tokens(rows: list[dict[str, Any]], objective: str, path: Path, title: str) -> Path:
    """`rows`: explorer.report.tokens.token_rows. Left: the objective (with its interval) against the
    visual tokens per image; right: the SFT tokens/s the same configurations ran at. One colour per
    expert set; rows with the same token count are spread a little sideways."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.3)
    same = Counter(r["visual_tokens"] for r in rows)
    seen: dict[int, int] = {}
    colour = {e: f"C{i % 10}" for i, e in enumerate(dict.fromkeys(r["experts"] for r in rows))}
    shown: set[str] = set()  # one legend entry per expert set
    for r in rows:
        t = r["visual_tokens"]
        j, m = seen.get(t, 0), same[t]
        seen[t] = j + 1
        x = t * 2 ** (0.12 * (j - (m - 1) / 2))  # log2 axis: an even sideways step
        c, first = colour[r["experts"]], r["experts"] not in shown
        shown.add(r["experts"])
        err = _error(r)
        ax.errorbar([x], [r["value"]], yerr=None if err is None else [[err[0]], [err[1]]], fmt="o", capsize=3,
                    color=c, label=r["experts"] if first else None)
        if r["setting"]:  # its values only, upright beside the point (the table has the names)
            ax.annotate(",".join(kv.split("=", 1)[-1] for kv in r["setting"].split()), (x, r["value"]),
                        textcoords="offset points", xytext=(3, 4), fontsize=6, rotation=90)
        if r.get("sft_tokens_per_s"):
            bx.plot([x], [r["sft_tokens_per_s"]], "s", color=c)
    for a, ylabel in ((ax, objective), (bx, "SFT tokens/s")):
        ticks = sorted(same)
        a.set_xscale("log", base=2)
        a.set_xticks(ticks, [str(t) for t in ticks])
        a.set_xlabel("visual tokens per image")
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
        a.margins(x=0.2, y=0.15)
    ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
