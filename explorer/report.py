"""Reports read from the study database: status JSON, leaderboard, paper-style table, greedy path.

Everything here is rebuilt from the stored trials (params, user attrs, the bootstrap replicates the
controller stored, and the result.json of the trial directory), so it works the same on a running,
a finished or a resumed study. Statistics (seed mean and spread, intervals, paired comparisons,
ties) come from explorer/stats.py, as the greedy strategy's decisions do.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from explorer.dashboard import trial_scores
from explorer.strategies.base import trial_params
from explorer import stats
from explorer.strategies.fidelity import FIDELITY_ATTR, RUNG_ATTR, RUNGS_ATTR, stopped_marks
from explorer.rungs_view import RUNG_NOTE, row_rung, stopped_numbers
from explorer.scales import (AVG_LABEL, CSV_DIGITS, LEGEND, PAPER_ORDER, column, fmt, fmt_ci, label,
                             objective_label)
from explorer.tracking import STUDY_EXPERIMENT_ATTR, STUDY_RUN_ATTR, TRIAL_RUN_ATTR, expert_letters

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("markdown", "csv")
_USER_ATTR_KEYS = ("round", "candidate", "seed", "align_seed", "attempt", "trial_dir")


class ReportError(ValueError):
    """A report cannot be made as asked (unknown format, ...)."""


def _maximize(study) -> bool:
    return study.direction.name == "MAXIMIZE"


def trial_result(trial) -> dict | None:
    """The trial's result.json (scores, objective, system figures), or None if it has none."""
    if isinstance(trial.user_attrs.get("result"), dict):
        return trial.user_attrs["result"]
    trial_dir = trial.user_attrs.get("trial_dir")
    if not trial_dir:
        return None
    path = Path(trial_dir) / "result.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("cannot read %s: %s", path, err)
        return None


def _scores(trial) -> dict[str, float]:
    scores = trial_scores(trial.user_attrs)
    if scores:
        return scores
    result = trial_result(trial)
    return dict((result or {}).get("scores") or {})


def objective_name(study) -> str:
    """The objective the trials report (result.json's objective_name; "avg" when none says)."""
    for t in _complete(study):
        name = (trial_result(t) or {}).get("objective_name")
        if name:
            return str(name)
    return "avg"


def _stat(trial, key: str) -> Any:
    """A statistic of the trial's result (objective_ci, scores_ci, blind_scores, ...): the user attr
    the controller stored, else result.json."""
    if trial.user_attrs.get(key) is not None:
        return trial.user_attrs[key]
    return (trial_result(trial) or {}).get(key)


def trial_record(trial, stopped: dict[str, int] | None = None) -> dict[str, Any]:
    """One trial as status JSON shows it (`stopped`: the study's multi-fidelity stop marks)."""
    ua = trial.user_attrs
    rec: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial_params(trial),
        "experts": expert_letters(trial.params, ua),
        "value": trial.value,
        "mlflow_run_id": ua.get(TRIAL_RUN_ATTR),
    }
    for key in _USER_ATTR_KEYS:
        rec[key] = ua.get(key)
    if trial.state.name == "COMPLETE":
        for key in stats.STAT_ATTRS:
            rec[key] = _stat(trial, key)
    rec["rung"], rec["rungs"] = ua.get(RUNG_ATTR), ua.get(RUNGS_ATTR)  # multi-fidelity: the rung, the result's
    rec["fidelity"] = ua.get(FIDELITY_ATTR)  # fidelity block, where its candidate stopped
    rec["stopped_at_rung"] = (stopped or {}).get(str(trial.number))
    rec["datetime_start"] = trial.datetime_start.isoformat() if trial.datetime_start else None
    rec["datetime_complete"] = trial.datetime_complete.isoformat() if trial.datetime_complete else None
    rec["duration_s"] = trial.duration.total_seconds() if trial.duration else None
    if ua.get("error"):
        rec["error"] = ua["error"]
    return rec


def status_json(study) -> dict[str, Any]:
    """The whole study as one JSON-serialisable document (DESIGN.md's `status --json`), with the
    leaderboard's and the greedy path's statistics exactly as the terminal shows them."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    best = best_trial(study)
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "objective_scale": LEGEND,
        "tie_threshold": stats.tie_threshold(study),
        "n_trials": len(trials),
        "states": counts,
        "best": None if best is None else {"number": best.number, "value": best.value,
                                           "experts": expert_letters(best.params, best.user_attrs)},
        "leaderboard": leaderboard(study),
        "greedy_path": greedy_path(study),
        "mlflow_experiment_id": study.user_attrs.get(STUDY_EXPERIMENT_ATTR),
        "mlflow_parent_run_id": study.user_attrs.get(STUDY_RUN_ATTR),
        "trials": [trial_record(t, stopped_marks(study._storage, study._study_id)) for t in trials],
    }


def _complete(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]


def best_trial(study):
    done = [t for t in _complete(study) if not _below_top(t)]  # a lower rung trained less
    if not done:
        return None
    pick = max if _maximize(study) else min
    return pick(done, key=lambda t: t.value)


def _config_key(trial) -> tuple:
    """Trials that differ only in seed share a key: repeats are ranked by their mean."""
    return tuple(sorted((k, v) for k, v in trial.params.items() if k != "seed"))


def _configs(study, key=_config_key) -> list[tuple[list, set]]:
    """(complete trials, seeds tried in any state) per configuration with a complete trial, in
    order of first trial."""
    done: dict[tuple, list] = {}
    seeds: dict[tuple, set] = {}
    for t in study.get_trials(deepcopy=False):
        k = key(t)
        seeds.setdefault(k, set()).add(t.user_attrs.get("seed", t.number))
        if t.state.name == "COMPLETE" and t.value is not None:
            done.setdefault(k, []).append(t)
    # multi-fidelity: a configuration counts by its highest rung (the lower ones trained less)
    for k, ts in done.items():
        top = max(_rung(t) for t in ts)
        done[k] = [t for t in ts if _rung(t) == top]
    return [(done[k], seeds[k]) for k in seeds if k in done]


def _rung(t) -> float:
    """A trial's rung; full fidelity (no rungs) ranks as the top."""
    return float(t.user_attrs.get(RUNG_ATTR, math.inf))


def _below_top(t) -> bool:
    return RUNG_ATTR in t.user_attrs and t.user_attrs[RUNG_ATTR] < t.user_attrs.get(RUNGS_ATTR, 0) - 1


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _blind_objective(trials: list) -> float | None:
    return _mean([_stat(t, "blind_objective") for t in trials])


def _row_stats(c: dict[str, Any], vs: str = "best") -> dict[str, Any]:
    """A candidate's statistics; its comparison is with `vs` (the leaderboard's best, a round's leader)."""
    return {"value": c["mean"], "std": c["std"], "n": c["n"], "planned": c["planned"], "partial": c["partial"],
            "ci": c["ci"], "tied": c["tied"], f"p_beats_{vs}": c["p_beats_leader"], "diff_ci": c["diff_ci"]}


def leaderboard(study) -> list[dict[str, Any]]:
    """One row per configuration, best first: seed mean, spread (None for one seed), seeds done of
    seeds tried, the bootstrap interval, the blind control's objective, and the paired comparison
    with the best row (`tied` when P(it beats the best) >= the study's tie threshold). A row whose
    seeds partly failed and that ranks above a complete row says so in `note`."""
    cands, firsts = [], []
    for trials, seeds in _configs(study):
        first = min(trials, key=lambda t: t.number)
        c = stats.candidate(f"config/{'/'.join(f'{k}={v}' for k, v in _config_key(first))}", trials, len(seeds))
        cands.append(c)
        firsts.append((first, trials))
    full = [c for c, (first, _) in zip(cands, firsts) if not _below_top(first)]
    stats.compare(full, _maximize(study), stats.tie_threshold(study))
    rows = []
    for c, (first, trials) in zip(cands, firsts):
        if _below_top(first):  # stopped at a lower rung: shown, never compared with full-fidelity rows
            c.update(leader=False, tied=False, p_beats_leader=None, diff_ci=None)
        rows.append({
            "experts": expert_letters(first.params, first.user_attrs),
            "params": {k: v for k, v in trial_params(first).items() if not k.startswith("expert_")},
            **_row_stats(c), "best": c["leader"],
            "blind": _blind_objective(trials),
            "trials": c["trials"],
            "round": first.user_attrs.get("round"),
            "rung": first.user_attrs.get(RUNG_ATTR), "stopped": _below_top(first),
            "fraction": (first.user_attrs.get(FIDELITY_ATTR) or {}).get("fraction"),
            "mlflow_run_id": first.user_attrs.get(TRIAL_RUN_ATTR),
        })
    rows.sort(key=lambda r: (not r["best"], r["stopped"], -r["value"] if _maximize(study) else r["value"],
                             r["trials"][0]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        if row["partial"] and any(not r["partial"] for r in rows[rank:]):
            row["note"] = f"{row['n']} of {row['planned']} seeds (the others failed); ranked on those"
    return rows


def greedy_path(study) -> list[dict[str, Any]]:
    """Best expert set of every greedy round (seed repeats ranked by their mean), in round order,
    with its interval, the round's statistically tied leaders and every candidate's paired
    comparison with the leader; `best` marks the study's answer. Empty for studies without rounds."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.user_attrs.get("candidate") == "base" or (t.user_attrs.get("round") or 0) > 0 for t in trials):
        return []  # not a greedy study (a grid's trials all sit in round 0)

    def key(t):
        return (t.user_attrs.get("round"), expert_letters(t.params, t.user_attrs))

    rounds: dict[int, list[dict[str, Any]]] = {}
    for done, seeds in _configs(study, key):
        rnd, experts = key(done[0])
        if rnd is None:
            continue
        c = stats.candidate(f"r{int(rnd)}/{experts}", done, len(seeds))
        c["experts"], c["stopped"] = experts, _below_top(done[0])
        rounds.setdefault(int(rnd), []).append(c)
    sign = 1 if _maximize(study) else -1
    path = []
    for rnd in sorted(rounds):
        cands = rounds[rnd]
        lead = stats.compare([c for c in cands if not c["stopped"]], sign > 0, stats.tie_threshold(study))
        if lead is None:
            continue  # its round's rungs are not decided yet
        for c in cands:
            if c["stopped"]:  # stopped at a lower rung: listed, not compared
                c.update(leader=False, tied=False, p_beats_leader=None, diff_ci=None)
        path.append({"round": rnd, "experts": lead["experts"], "value": lead["mean"], "std": lead["std"],
                     "ci": lead["ci"], "n": lead["n"], "planned": lead["planned"], "best": False,
                     "tied": stats.tied_labels(cands), "tie_note": stats.tie_note(cands),
                     "candidates": [{"experts": c["experts"], "trial_numbers": c["trials"], "stopped": c["stopped"],
                                     **_row_stats(c, "leader")}
                                    for c in cands]})
    if path:
        max(path, key=lambda p: sign * p["value"])["best"] = True
    return path


def tie_marks(study) -> tuple[dict[str, str], dict[int, tuple[dict[str, float], dict[str, str]]]]:
    """What MLflow shows of ties: parent tags (tied_with_best, round.<r>.leader, round.<r>.tied) and
    per trial number its round comparison (compare/p_beats_leader, compare/diff_lo|hi metrics,
    tied_with_leader tag)."""
    parent = {"tied_with_best": ",".join(r["experts"] for r in leaderboard(study) if r["tied"])}
    trials: dict[int, tuple[dict[str, float], dict[str, str]]] = {}
    for entry in greedy_path(study):
        parent[f"round.{entry['round']}.leader"] = entry["experts"]
        parent[f"round.{entry['round']}.tied"] = ",".join(entry["tied"])
        for c in entry["candidates"]:
            metrics = {} if c["p_beats_leader"] is None else {"compare/p_beats_leader": c["p_beats_leader"]}
            if c["diff_ci"]:
                metrics.update({"compare/diff_lo": c["diff_ci"][0], "compare/diff_hi": c["diff_ci"][1]})
            for number in c["trial_numbers"]:
                trials[number] = (metrics, {"tied_with_leader": str(c["tied"]).lower()})
    return parent, trials


def format_path(path: list[dict[str, Any]]) -> str:
    """A+B (658.3 [650.0-666.6]) -> A+B+F (665.3 ...) -> ... with the answer starred and ties named."""
    def one(p):
        ci = f" [{fmt_ci(p['ci'])}]" if p.get("ci") else ""
        sd = f" sd {fmt(p['std'])}" if p.get("std") is not None else ""
        if p.get("planned", 1) > 1:  # repeats: how many seeds, and say it when some failed
            sd = f", {p['n']} of {p['planned']} seeds{sd}" if p["n"] < p["planned"] else f", {p['n']} seeds{sd}"
        tie = f" ~ tied with {', '.join(p['tied'][1:])}" if p.get("tied") else ""
        return f"{p['experts']} ({fmt(p['value'])}{ci}{sd}){tie}{' *best*' if p['best'] else ''}"

    return " -> ".join(one(p) for p in path)


def table(study) -> dict[str, Any]:
    """The paper-style table: #Enc, Combination, other varying params, one column per benchmark
    (the paper's names and order first) and the objective, each as the seed mean with its interval
    and the blind control's value. Benchmark intervals are the trials' item bootstrap (averaged
    over seeds); the objective's is the leaderboard's. Rows are ordered as the paper orders them."""
    done = _complete(study)
    objective_name = "avg"
    varying = sorted({k for t in done for k in t.params if not k.startswith("expert_") and k != "seed"
                      and len({str(u.params.get(k)) for u in done}) > 1})
    board = {tuple(r["trials"]): r for r in leaderboard(study)}
    stopped = stopped_numbers(study)
    cols: set[str] = set()
    rows = []
    for trials, _ in _configs(study):
        first = min(trials, key=lambda t: t.number)
        cells: dict[str, dict[str, Any]] = {}
        for t in trials:
            result = trial_result(t) or {}
            if result.get("objective_name"):
                objective_name = str(result["objective_name"])
            cis, blind = _stat(t, "scores_ci") or {}, _stat(t, "blind_scores") or {}
            gaps = _stat(t, "blind_gap_ci") or {}
            for bench, score in _scores(t).items():
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
            lo, hi = _mean(cell["lo"]), _mean(cell["hi"])
            gap = _mean(cell["gap"])  # the paired interval of score - blind score lies above 0
            scores[col] = {"value": _mean(cell["v"]), "ci": None if lo is None or hi is None else [lo, hi],
                           "blind": _mean(cell["blind"]), "needs_image": None if gap is None else gap > 0}
        scores["_objective"] = {"value": row["value"], "ci": row["ci"], "blind": row["blind"]}
        rows.append({"enc": len(experts.split("+")) if experts else 0, "experts": experts,
                     "vary": [first.params.get(k) for k in varying], "scores": scores,
                     "n": row["n"], "std": row["std"], "tied": row["tied"] and not row["best"],
                     "p_beats_best": row["p_beats_best"], "rung": row_rung(row, stopped)})
    rows.sort(key=lambda r: (r["enc"], r["experts"], [str(v) for v in r["vary"]]))
    ordered = [c for c in PAPER_ORDER if c in cols] + sorted(c for c in cols if c not in PAPER_ORDER)
    return {"columns": ordered, "varying": varying, "objective": objective_name, "rows": rows}


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
    obj = objective_label(t["objective"])
    heads = ["#Enc", "Combination", *t["varying"]]
    seeds = any(r["n"] > 1 for r in t["rows"])
    ties = any(r["tied"] for r in t["rows"])
    if fmt_name == "csv":
        return _csv(t, heads, obj)
    header = [*heads, *[label(c) for c in t["columns"]], obj]
    rungs = any(r["rung"] for r in t["rows"])  # multi-fidelity: full, or where a row stopped
    extra = (["Seeds (sd)"] if seeds else []) + (["Tie"] if ties else []) + (["Rung"] if rungs else [])
    lines = ["| " + " | ".join(header + extra) + " |", "|" + "---|" * len(header + extra)]
    for r, cells in zip(t["rows"], _cells(t, "score", 1)):
        more = ([f"{r['n']} ({fmt(r['std'])})" if r["std"] is not None else str(r["n"])] if seeds else [])
        more += ([f"~best (P={r['p_beats_best']:.2f})" if r["tied"] else ""] if ties else [])
        more += [r["rung"]] if rungs else []
        lines.append("| " + " | ".join([str(r["enc"]), r["experts"], *map(fmt, r["vary"]), *cells, *more]) + " |")
    if any(r["scores"]["_objective"]["blind"] is not None for r in t["rows"]):
        lines += ["", "Blind control (every image replaced by a blank one; * the score beats it beyond the "
                      "paired interval):", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join([str(r["enc"]), r["experts"], *map(fmt, r["vary"]), *cells]) + " |"
                  for r, cells in zip(t["rows"], _cells(t, "blind", 1))]
    lines += ["", LEGEND if obj == AVG_LABEL else LEGEND.split(". ", 1)[1],
              "Intervals: 95% bootstrap over benchmark items (and seeds, for the objective).",
              *([RUNG_NOTE[0].upper() + RUNG_NOTE[1:] + "."] if rungs else [])]
    path = greedy_path(study)
    if path:
        lines += ["", "Greedy path: " + format_path(path)]
    return "\n".join(lines) + "\n"


def _csv(t: dict[str, Any], heads: list[str], obj: str) -> str:
    cols = [*t["columns"], "_objective"]
    names = [label(c) if c != "_objective" else obj for c in cols]
    header = [*heads]
    for name in names:
        header += [name, f"{name} lo", f"{name} hi", f"{name} blind"]
    rungs = any(r["rung"] for r in t["rows"])
    header += ["seeds", "seed sd", "tied with best", *(["rung"] if rungs else [])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in t["rows"]:
        line = [r["enc"], r["experts"], *["" if v is None else v for v in r["vary"]]]
        for col in cols:
            s = r["scores"].get(col) or {}
            ci = s.get("ci") or [None, None]
            line += [fmt(s.get("value"), CSV_DIGITS), fmt(ci[0], CSV_DIGITS), fmt(ci[1], CSV_DIGITS),
                     fmt(s.get("blind"), CSV_DIGITS)]
        line += [r["n"], fmt(r["std"], CSV_DIGITS), "yes" if r["tied"] else "", *([r["rung"]] if rungs else [])]
        writer.writerow(line)
    return buf.getvalue()
