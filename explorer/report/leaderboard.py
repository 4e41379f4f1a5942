"""Reports read from the study database: status JSON, leaderboard, paper-style table, greedy path.

Everything here is rebuilt from the stored trials (params, user attrs, the bootstrap replicates the
controller stored, and the result.json of the trial directory), so it works the same on a running,
a finished or a resumed study. Statistics (seed mean and spread, intervals, paired comparisons,
ties) come from explorer/study/stats.py, as the greedy strategy's decisions do.
"""
from __future__ import annotations

import logging
import math
import statistics
from typing import Any

from explorer.study import stats
from explorer.study.attrs import trial_scores
from explorer.report.scales import LEGEND, TASK_LEGEND, fmt, fmt_ci, result_harness
from explorer.strategies.base import trial_params
from explorer.strategies.fidelity import (
    FIDELITY_ATTR,
    RUNG_ATTR,
    RUNGS_ATTR,
    stopped_marks,
)
from explorer.study.attrs import STUDY_EXPERIMENT_ATTR, STUDY_RUN_ATTR, TRIAL_RUN_ATTR, expert_letters
from explorer.study.handle import StoredStudy
from explorer.report.rank_transfer import rank_transfer
from explorer.study.expectation import study_expectation
from explorer.report.trial_files import trial_result

logger = logging.getLogger(__name__)

_USER_ATTR_KEYS = ("round", "candidate", "seed", "align_seed", "attempt", "trial_dir")


class ReportError(ValueError):
    """A report cannot be made as asked (unknown format, ...)."""


def _maximize(study) -> bool:
    return study.direction.name == "MAXIMIZE"


def benchmark_scores(trial) -> dict[str, float]:
    scores = trial_scores(trial.user_attrs)
    if scores:
        return scores
    result = trial_result(trial)
    return dict((result or {}).get("scores") or {})


def objective_name(study) -> str:
    """The objective the trials report (result.json's objective_name; "avg" when none says)."""
    for t in complete_trials(study):
        name = (trial_result(t) or {}).get("objective_name")
        if name:
            return str(name)
    return "avg"


def objective_harness(study) -> str | None:
    """The harness that scored the trials (None: the built-in scorers)."""
    for t in complete_trials(study):
        return result_harness(trial_result(t))
    return None


def trial_stat(trial, key: str) -> Any:
    """A statistic of the trial's result (objective_ci, scores_ci, blind_scores, ...): the user attr
    the controller stored, else result.json."""
    if trial.user_attrs.get(key) is not None:
        return trial.user_attrs[key]
    return (trial_result(trial) or {}).get(key)


def status_record(trial, stopped: dict[str, int] | None = None) -> dict[str, Any]:
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
            rec[key] = trial_stat(trial, key)
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
    path = greedy_path(study)
    best = best_trial(study, path)
    best_experts = None if best is None else expert_letters(best.params, best.user_attrs)
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "objective_scale": TASK_LEGEND if objective_harness(study) == "lmms-eval" else LEGEND,
        "tie_threshold": stats.tie_threshold(study),
        "n_trials": len(trials),
        "states": counts,
        "best": None if best is None else {"number": best.number, "value": best.value,
                                           "experts": best_experts},
        "leaderboard": leaderboard(study),
        "greedy_path": path,
        "expectation": study_expectation(study, best_experts, path),
        "rank_transfer": rank_transfer(study),  # multi-fidelity: each lower rung against the top (None: no rungs)
        "mlflow_experiment_id": study.user_attrs.get(STUDY_EXPERIMENT_ATTR),
        "mlflow_parent_run_id": study.user_attrs.get(STUDY_RUN_ATTR),
        "trials": [status_record(t, stopped_marks(StoredStudy.of(study))) for t in trials],
    }


def expectation(study, path: list[dict[str, Any]] | None = None) -> dict | None:
    """The study's outcome against the expectation recorded from its file (None: it has none);
    `path`: its greedy_path when the caller has it."""
    path = greedy_path(study) if path is None else path
    best = best_trial(study, path)
    return study_expectation(study, None if best is None else expert_letters(best.params, best.user_attrs), path)


def complete_trials(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]


def best_trial(study, path: list[dict[str, Any]] | None = None):
    """The best complete trial at full fidelity; in a greedy study, the best trial of its answer (the
    last round that improved, greedy_path, or `path` when the caller has it), which is not always
    the highest value."""
    done = [t for t in complete_trials(study) if not _below_top(t)]  # a lower rung trained less
    answer = next((p for p in (greedy_path(study) if path is None else path) if p["best"]), None)
    if answer is not None:
        numbers = {n for c in answer["candidates"] if c["experts"] == answer["experts"] for n in c["trial_numbers"]}
        done = [t for t in done if t.number in numbers] or done
    if not done:
        return None
    pick = max if _maximize(study) else min
    return pick(done, key=lambda t: t.value)


def _config_key(trial) -> tuple:
    """Trials that differ only in seed share a key: repeats are ranked by their mean."""
    return tuple(sorted((k, v) for k, v in trial.params.items() if k != "seed"))


def configurations(study, key=_config_key) -> list[tuple[list, set]]:
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


def mean_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _blind_objective(trials: list) -> float | None:
    return mean_or_none([trial_stat(t, "blind_objective") for t in trials])


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
    for trials, seeds in configurations(study):
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
    for done, seeds in configurations(study, key):
        rnd, experts = key(done[0])
        if rnd is None:
            continue
        c = stats.candidate(f"r{int(rnd)}/{experts}", done, len(seeds))
        c["experts"], c["stopped"] = experts, _below_top(done[0])
        rounds.setdefault(int(rnd), []).append(c)
    sign = 1 if _maximize(study) else -1
    rule, best = stats.improvement_rule(study), None
    path = []
    for rnd in sorted(rounds):
        cands = rounds[rnd]
        lead = stats.compare([c for c in cands if not c["stopped"]], sign > 0, stats.tie_threshold(study))
        if lead is None:
            continue  # its round's rungs are not decided yet
        improved = stats.improves(lead, best, sign > 0, rule)
        best = lead if improved else best
        for c in cands:
            if c["stopped"]:  # stopped at a lower rung: listed, not compared
                c.update(leader=False, tied=False, p_beats_leader=None, diff_ci=None)
        path.append({"round": rnd, "experts": lead["experts"], "value": lead["mean"], "std": lead["std"],
                     "ci": lead["ci"], "n": lead["n"], "planned": lead["planned"], "best": False, "improved": improved,
                     "tied": stats.tied_labels(cands), "tie_note": stats.tie_note(cands),
                     "candidates": [{"experts": c["experts"], "trial_numbers": c["trials"], "stopped": c["stopped"],
                                     **_row_stats(c, "leader")}
                                    for c in cands]})
    if improving := [p for p in path if p["improved"]]:  # the answer: the last round that improved
        improving[-1]["best"] = True
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
