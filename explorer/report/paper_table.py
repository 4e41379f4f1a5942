"""The study as the paper's tables (markdown or CSV): #Enc, Combination, one column per benchmark
and the objective, each with its interval and the blind control, seeds, ties and rungs; built from
explorer/report/leaderboard.py's leaderboard and configurations."""
from __future__ import annotations

import csv
import io
from typing import Any

from explorer.report.leaderboard import (
    ReportError,
    benchmark_scores,
    complete_trials,
    configurations,
    expectation,
    format_path,
    greedy_path,
    leaderboard,
    mean_or_none,
    trial_stat,
)
from explorer.report.trial_files import trial_result
from explorer.study.expectation import summary_line
from explorer.report.rungs import RUNG_NOTE, row_rung, stopped_numbers
from explorer.report.scales import (
    AVG_LABEL,
    LEGEND,
    PAPER_ORDER,
    TASK_LEGEND,
    column,
    digits_for,
    fmt,
    fmt_ci,
    label,
    objective_label,
    result_harness,
)
from explorer.study.attrs import expert_letters
EXPORT_FORMATS = ("markdown", "csv")


def table(study) -> dict[str, Any]:
    """The paper-style table: #Enc, Combination, other varying params, one column per benchmark
    (the paper's names and order first) and the objective, each as the seed mean with its interval
    and the blind control's value. Benchmark intervals are the trials' item bootstrap (averaged
    over seeds); the objective's is the leaderboard's. Rows are ordered as the paper orders them."""
    done = complete_trials(study)
    objective_name, harness = "avg", None
    varying = sorted({k for t in done for k in t.params if not k.startswith("expert_") and k != "seed"
                      and len({str(u.params.get(k)) for u in done}) > 1})
    board = {tuple(r["trials"]): r for r in leaderboard(study)}
    stopped = stopped_numbers(study)
    cols: set[str] = set()
    rows = []
    for trials, _ in configurations(study):
        first = min(trials, key=lambda t: t.number)
        cells: dict[str, dict[str, Any]] = {}
        for t in trials:
            result = trial_result(t) or {}
            if result.get("objective_name"):
                objective_name = str(result["objective_name"])
            harness = harness or result_harness(result)
            cis, blind = trial_stat(t, "scores_ci") or {}, trial_stat(t, "blind_scores") or {}
            gaps = trial_stat(t, "blind_gap_ci") or {}
            for bench, score in benchmark_scores(t).items():
                if "/" in bench:  # sub-figures (pope/random/f1) stay in MLflow, not in the table
                    continue
                cell = cells.setdefault(column(bench), {"v": [], "lo": [], "hi": [], "blind": [], "gap": []})
                cell["gap"].append((gaps.get(bench) or [None])[0])
                cell["v"].append(score)
                cell["lo"].append((cis.get(bench) or [None])[0])
                cell["hi"].append((cis.get(bench) or [None, None])[1])
                cell["blind"].append(blind.get(bench))
        cols |= set(cells)
        row = board[tuple(sorted(t.number for t in trials))]
        experts = expert_letters(first.params, first.user_attrs)
        scores = {}
        for col, cell in cells.items():
            lo, hi = mean_or_none(cell["lo"]), mean_or_none(cell["hi"])
            gap = mean_or_none(cell["gap"])  # the paired interval of score - blind score lies above 0
            scores[col] = {"value": mean_or_none(cell["v"]), "ci": None if lo is None or hi is None else [lo, hi],
                           "blind": mean_or_none(cell["blind"]), "needs_image": None if gap is None else gap > 0}
        scores["_objective"] = {"value": row["value"], "ci": row["ci"], "blind": row["blind"]}
        rows.append({"enc": len(experts.split("+")) if experts else 0, "experts": experts,
                     "vary": [first.params.get(k) for k in varying], "scores": scores,
                     "n": row["n"], "std": row["std"], "tied": row["tied"] and not row["best"],
                     "p_beats_best": row["p_beats_best"], "rung": row_rung(row, stopped)})
    rows.sort(key=lambda r: (r["enc"], r["experts"], [str(v) for v in r["vary"]]))
    ordered = [c for c in PAPER_ORDER if c in cols] + sorted(c for c in cols if c not in PAPER_ORDER)
    return {"columns": ordered, "varying": varying, "objective": objective_name, "harness": harness, "rows": rows}


def _cells(t: dict[str, Any], what: str, digits: int) -> list[list[str]]:
    """Per row: the score (with its interval when `what` is "score", or the blind value) per column."""
    out = []
    for r in t["rows"]:
        cells = []
        for col in [*t["columns"], "_objective"]:
            s = r["scores"].get(col) or {}
            if what == "blind":
                cells.append(fmt(s.get("blind"), digits) + ("*" if s.get("needs_image") else ""))
            else:
                ci = f" ({fmt_ci(s['ci'], digits)})" if s.get("ci") else ""
                cells.append(f"{fmt(s.get('value'), digits)}{ci}")
        out.append(cells)
    return out


def export(study, fmt_name: str = "markdown") -> str:
    """The study as a paper-style table (markdown or CSV) with units, intervals, the blind control
    and seeds, with the greedy path under it (markdown)."""
    if fmt_name not in EXPORT_FORMATS:
        raise ReportError(f"unknown export format {fmt_name!r}; known: {', '.join(EXPORT_FORMATS)}")
    t = table(study)
    obj = objective_label(t["objective"], t["harness"])
    heads = ["#Enc", "Combination", *t["varying"]]
    seeds = any(r["n"] > 1 for r in t["rows"])
    ties = any(r["tied"] for r in t["rows"])
    if fmt_name == "csv":
        return _csv(t, heads, obj)
    header = [*heads, *[label(c) for c in t["columns"]], obj]
    rungs = any(r["rung"] for r in t["rows"])  # multi-fidelity: full, or where a row stopped
    extra = (["Seeds (sd)"] if seeds else []) + (["Tie"] if ties else []) + (["Rung"] if rungs else [])
    lines = ["| " + " | ".join(header + extra) + " |", "|" + "---|" * len(header + extra)]
    for r, cells in zip(t["rows"], _cells(t, "score", digits_for(t["harness"]))):
        more = ([f"{r['n']} ({fmt(r['std'])})" if r["std"] is not None else str(r["n"])] if seeds else [])
        more += ([f"~best (P={r['p_beats_best']:.2f})" if r["tied"] else ""] if ties else [])
        more += [r["rung"]] if rungs else []
        lines.append("| " + " | ".join([str(r["enc"]), r["experts"], *map(fmt, r["vary"]), *cells, *more]) + " |")
    if any(r["scores"]["_objective"]["blind"] is not None for r in t["rows"]):
        lines += ["", "Blind control (every image replaced by a blank one; * the score beats it beyond the "
                      "paired interval):", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join([str(r["enc"]), r["experts"], *map(fmt, r["vary"]), *cells]) + " |"
                  for r, cells in zip(t["rows"], _cells(t, "blind", digits_for(t["harness"])))]
    legend = TASK_LEGEND if t["harness"] == "lmms-eval" else LEGEND if obj == AVG_LABEL else LEGEND.split(". ", 1)[1]
    lines += ["", legend,
              "Intervals: 95% bootstrap over benchmark items (and seeds, for the objective).",
              *([RUNG_NOTE[0].upper() + RUNG_NOTE[1:] + "."] if rungs else [])]
    path = greedy_path(study)
    if path:
        lines += ["", "Greedy path: " + format_path(path)]
    if line := summary_line(expectation(study, path)):
        lines += ["", line[0].upper() + line[1:] + "."]
    return "\n".join(lines) + "\n"


def _csv(t: dict[str, Any], heads: list[str], obj: str) -> str:
    cols = [*t["columns"], "_objective"]
    names = [label(c) if c != "_objective" else obj for c in cols]
    header = [*heads]
    for name in names:
        header += [name, f"{name} lo", f"{name} hi", f"{name} blind"]
    rungs = any(r["rung"] for r in t["rows"])
    header += ["seeds", "seed sd", "tied with best", *(["rung"] if rungs else [])]
    digits = digits_for(t["harness"], csv=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in t["rows"]:
        line = [r["enc"], r["experts"], *["" if v is None else v for v in r["vary"]]]
        for col in cols:
            s = r["scores"].get(col) or {}
            ci = s.get("ci") or [None, None]
            line += [fmt(s.get("value"), digits), fmt(ci[0], digits), fmt(ci[1], digits),
                     fmt(s.get("blind"), digits)]
        line += [r["n"], fmt(r["std"], digits), "yes" if r["tied"] else "", *([r["rung"]] if rungs else [])]
        writer.writerow(line)
    return buf.getvalue()
