"""Reports read from the study database: status JSON, leaderboard, paper-style table, greedy path.

Everything here is rebuilt from the stored trials (params, user attrs, and the result.json of the
trial directory), so it works the same on a running, a finished or a resumed study.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from pathlib import Path
from typing import Any

from explorer.dashboard import trial_scores
from explorer.strategies.base import trial_params
from explorer.tracking import STUDY_EXPERIMENT_ATTR, STUDY_RUN_ATTR, TRIAL_RUN_ATTR, expert_letters

logger = logging.getLogger(__name__)

# Benchmark keys (as trainers.eval names them, and common spellings) -> the paper's column header.
PAPER_COLUMNS: dict[str, str] = {
    "gqa": "GQA", "mme": "MME", "mmmu": "MMMU", "ocrbench": "OCR", "ocr": "OCR",
    "sqa": "SQA", "scienceqa": "SQA", "scienceqa_img": "SQA", "pope": "POPE", "textvqa": "TextVQA",
}
PAPER_ORDER = ["GQA", "MME", "MMMU", "OCR", "SQA", "POPE", "TextVQA"]
EXPORT_FORMATS = ("markdown", "csv")
_USER_ATTR_KEYS = ("round", "candidate", "seed", "attempt", "trial_dir")


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


def trial_record(trial) -> dict[str, Any]:
    """One trial as status JSON shows it."""
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
    rec["datetime_start"] = trial.datetime_start.isoformat() if trial.datetime_start else None
    rec["datetime_complete"] = trial.datetime_complete.isoformat() if trial.datetime_complete else None
    rec["duration_s"] = trial.duration.total_seconds() if trial.duration else None
    if ua.get("error"):
        rec["error"] = ua["error"]
    return rec


def status_json(study) -> dict[str, Any]:
    """The whole study as one JSON-serialisable document (DESIGN.md's `status --json`)."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    best = best_trial(study)
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "n_trials": len(trials),
        "states": counts,
        "best": None if best is None else {"number": best.number, "value": best.value,
                                           "experts": expert_letters(best.params, best.user_attrs)},
        "greedy_path": greedy_path(study),
        "mlflow_experiment_id": study.user_attrs.get(STUDY_EXPERIMENT_ATTR),
        "mlflow_parent_run_id": study.user_attrs.get(STUDY_RUN_ATTR),
        "trials": [trial_record(t) for t in trials],
    }


def _complete(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]


def best_trial(study):
    done = _complete(study)
    if not done:
        return None
    pick = max if _maximize(study) else min
    return pick(done, key=lambda t: t.value)


def _config_key(trial) -> tuple:
    """Trials that differ only in seed share a key: repeats are ranked by their mean."""
    return tuple(sorted((k, v) for k, v in trial.params.items() if k != "seed"))


def leaderboard(study) -> list[dict[str, Any]]:
    """One row per configuration (seed repeats merged: mean, spread, n), best first."""
    groups: dict[tuple, list] = {}
    for t in _complete(study):
        groups.setdefault(_config_key(t), []).append(t)
    rows = []
    for trials in groups.values():
        values = [t.value for t in trials]
        first = min(trials, key=lambda t: t.number)
        rows.append({
            "experts": expert_letters(first.params, first.user_attrs),
            "params": {k: v for k, v in trial_params(first).items() if not k.startswith("expert_")},
            "value": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values),
            "trials": sorted(t.number for t in trials),
            "round": first.user_attrs.get("round"),
            "mlflow_run_id": first.user_attrs.get(TRIAL_RUN_ATTR),
        })
    rows.sort(key=lambda r: (-r["value"] if _maximize(study) else r["value"], r["trials"][0]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def greedy_path(study) -> list[dict[str, Any]]:
    """Best expert set of every greedy round (seed repeats ranked by their mean), in round order;
    `best` marks the set that is the study's answer. Empty for studies without rounds."""
    rounds: dict[int, dict[str, list[float]]] = {}
    trials = study.get_trials(deepcopy=False)
    if not any(t.user_attrs.get("candidate") == "base" or (t.user_attrs.get("round") or 0) > 0 for t in trials):
        return []  # not a greedy study (a grid's trials all sit in round 0)
    for t in _complete(study):
        rnd = t.user_attrs.get("round")
        if rnd is None:
            continue
        rounds.setdefault(int(rnd), {}).setdefault(expert_letters(t.params, t.user_attrs), []).append(t.value)
    sign = 1 if _maximize(study) else -1
    path = []
    for rnd in sorted(rounds):
        means = {exp: statistics.fmean(v) for exp, v in rounds[rnd].items()}
        experts = max(sorted(means), key=lambda e: sign * means[e])
        vals = rounds[rnd][experts]
        path.append({"round": rnd, "experts": experts, "value": means[experts],
                     "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "best": False})
    if path:
        max(path, key=lambda p: sign * p["value"])["best"] = True
    return path


def format_path(path: list[dict[str, Any]]) -> str:
    """A+B (658.3) -> A+B+F (665.3) -> ... with the answer starred."""
    return " -> ".join(f"{p['experts']} ({_fmt(p['value'])}){' *best*' if p['best'] else ''}" for p in path)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, int)) or not isinstance(value, float):
        return str(value)
    if float(value).is_integer() and abs(value) >= 100:
        return str(int(value))
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def table(study) -> tuple[list[str], list[list[Any]]]:
    """The paper-style table: #Enc, Combination, other varying params, one column per benchmark
    (the paper's names and order first), and the objective (Avg). Repeats are averaged."""
    done = _complete(study)
    avg_name = "Avg"
    groups: dict[tuple, list] = {}
    for t in done:
        groups.setdefault(_config_key(t), []).append(t)
    varying = sorted({k for t in done for k in t.params if not k.startswith("expert_") and k != "seed"
                      and len({str(u.params.get(k)) for u in done}) > 1})
    bench_cols: dict[str, str] = {}
    rows_raw = []
    for trials in groups.values():
        first = min(trials, key=lambda t: t.number)
        per_bench: dict[str, list[float]] = {}
        for t in trials:
            result = trial_result(t) or {}
            if result.get("objective_name") and result["objective_name"] != "avg":
                avg_name = str(result["objective_name"])
            for bench, score in _scores(t).items():
                if "/" in bench:  # sub-figures (pope/random/f1) stay in MLflow, not in the table
                    continue
                col = PAPER_COLUMNS.get(bench.lower(), bench)
                bench_cols[col] = col
                per_bench.setdefault(col, []).append(score)
        experts = expert_letters(first.params, first.user_attrs)
        rows_raw.append((experts, [first.params.get(k) for k in varying],
                         {c: statistics.fmean(v) for c, v in per_bench.items()},
                         statistics.fmean(t.value for t in trials)))
    cols = [c for c in PAPER_ORDER if c in bench_cols] + sorted(c for c in bench_cols if c not in PAPER_ORDER)
    header = ["#Enc", "Combination", *varying, *cols, avg_name]
    rows_raw.sort(key=lambda r: (len(r[0].split("+")) if r[0] else 0, r[0], [str(v) for v in r[1]]))
    rows = [[len(e.split("+")) if e else 0, e, *vary, *[scores.get(c) for c in cols], avg]
            for e, vary, scores, avg in rows_raw]
    return header, rows


def export(study, fmt: str = "markdown") -> str:
    """The study as a paper-style table (markdown or CSV), with the greedy path under it."""
    if fmt not in EXPORT_FORMATS:
        raise ReportError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    header, rows = table(study)
    path = greedy_path(study)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buf.getvalue()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    if path:
        lines += ["", "Greedy path: " + format_path(path)]
    return "\n".join(lines) + "\n"
