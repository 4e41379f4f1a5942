"""Rank transfer: whether a rung below the top ranks a round's candidates as the top rung (full
fidelity) does, measured on the stored trials. Per round and lower rung: Kendall's tau and the
weighted tau Mordal uses (hyperbolic weights on ranks, so order among the leaders counts most) over
the candidates scored at both rungs, whether the rung alone would have chosen the top rung's leader,
and, where not, whether its choice loses at the top rung beyond the paired interval.

A level is compared with the top by its index alone, so a pre-screen stored as one more level
(rung -1) needs only its name in `level_name`."""
from __future__ import annotations

import math
import statistics
from fractions import Fraction
from typing import Any

from explorer.strategies.base import trial_params
from explorer.strategies.fidelity import FIDELITY_ATTR, RUNG_ATTR, RUNGS_ATTR, is_early_stopped
from explorer.study import stats
from explorer.study.attrs import expert_letters


def level_name(rung: int, fraction: float | None) -> str:
    share = f" ({Fraction(fraction).limit_denominator(1000)} of SFT)" if fraction is not None else ""
    return f"rung {rung}{share}"


def _groups(study) -> dict[Any, dict[int, dict[tuple, list]]]:
    """round -> rung -> candidate (its settings but the seed) -> complete trials, in trial order.
    A rung evaluation stopped early scored fewer items: not comparable, left out."""
    out: dict[Any, dict[int, dict[tuple, list]]] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE" or t.value is None or RUNG_ATTR not in t.user_attrs or is_early_stopped(t):
            continue
        key = tuple(sorted((k, v) for k, v in t.params.items() if k != "seed"))
        rungs = out.setdefault(t.user_attrs.get("round", 0), {})
        rungs.setdefault(int(t.user_attrs[RUNG_ATTR]), {}).setdefault(key, []).append(t)
    return out


def _labels(rungs: dict[int, dict[tuple, list]]) -> dict[tuple, str]:
    """A round's candidates by name: the expert set, and the other settings that differ among them."""
    firsts = {k: ts[0] for by in rungs.values() for k, ts in by.items()}
    params = {k: {p: v for p, v in trial_params(t).items() if not p.startswith("expert_") and p != "seed"}
              for k, t in firsts.items()}
    varying = sorted({p for ps in params.values() for p in ps if len({str(q.get(p)) for q in params.values()}) > 1})
    return {k: " ".join([expert_letters(t.params, t.user_attrs), *(f"{p}={params[k].get(p)}" for p in varying)])
            for k, t in firsts.items()}


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _taus(x: list[float], y: list[float], sign: float) -> tuple[float | None, float | None]:
    if len(x) < 2:
        return None, None
    from scipy.stats import kendalltau, weightedtau  # slow to import: only where a study has rungs

    # weightedtau weighs the largest values most: negated for minimize, so the best count most
    return (_finite(kendalltau(x, y).statistic),
            _finite(weightedtau([sign * v for v in x], [sign * v for v in y]).statistic))


def _lost(choice: dict, leader: dict, maximize: bool) -> tuple[bool | None, list | None]:
    """Whether the choice's top-rung trials lose to the leader's beyond the paired interval of
    choice - leader (None: no interval, trials without replicates or with unequal ones)."""
    stats.compare([leader, choice], maximize)
    ci = choice["diff_ci"]
    if ci is None or choice["ci"] is None or leader["ci"] is None:
        return None, ci
    return (ci[1] < 0 if maximize else ci[0] > 0), ci


def _round(rnd, rungs: dict[int, dict[tuple, list]], top: int, maximize: bool) -> dict[str, Any] | None:
    if top not in rungs or len(rungs) < 2:
        return None
    names = _labels(rungs)

    def cands(rung: int) -> dict[tuple, dict]:
        return {k: stats.candidate(f"r{rnd}/{names[k]}", ts) for k, ts in rungs[rung].items()}

    def leader(cs: dict[tuple, dict]) -> tuple:
        lead = stats.compare(list(cs.values()), maximize)
        return next(k for k, c in cs.items() if c is lead)

    tops = cands(top)
    lead = leader(tops)
    entries = []
    for rung in sorted(r for r in rungs if r != top):
        low = cands(rung)
        choice = leader(low)
        common = [k for k in low if k in tops]
        tau, wtau = _taus([low[k]["mean"] for k in common], [tops[k]["mean"] for k in common], 1.0 if maximize else -1.0)
        lost, ci = None, None
        if choice != lead and choice in tops:  # fresh statistics: compare() marks them in place
            lost, ci = _lost(stats.candidate(f"r{rnd}/{names[choice]}", rungs[top][choice]),
                             stats.candidate(f"r{rnd}/{names[lead]}", rungs[top][lead]), maximize)
        fraction = (rungs[rung][choice][0].user_attrs.get(FIDELITY_ATTR) or {}).get("fraction")
        entries.append({"rung": rung, "fraction": fraction, "n": len(common), "tau": tau, "weighted_tau": wtau,
                        "choice": names[choice], "same_choice": choice == lead, "reached_top": choice in tops,
                        "lost_beyond_interval": lost, "diff_ci": ci})
    return {"round": rnd, "top_leader": names[lead], "top_n": len(tops), "rungs": entries}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def rank_transfer(study) -> dict[str, Any] | None:
    """Every lower rung against the top rung, per round and over the rounds (None: no rungs)."""
    groups = _groups(study)
    if not groups:
        return None
    tops = {int(t.user_attrs[RUNGS_ATTR]) - 1 for rs in groups.values() for by in rs.values()
            for ts in by.values() for t in ts}
    top = max(tops)
    maximize = study.direction.name == "MAXIMIZE"
    rounds = [r for rnd in sorted(groups, key=lambda r: (r is None, r or 0))
              if (r := _round(rnd, groups[rnd], top, maximize)) is not None]
    per: dict[int, list[tuple[Any, dict]]] = {}
    for r in rounds:
        for e in r["rungs"]:
            per.setdefault(e["rung"], []).append((r, e))
    summary = []
    for rung in sorted(per):
        es = [e for _, e in per[rung]]
        same = sum(e["same_choice"] for e in es)
        summary.append({
            "rung": rung, "fraction": next((e["fraction"] for e in es if e["fraction"] is not None), None),
            "rounds": len(es), "same_choice": same, "same_choice_share": same / len(es),
            "tau": _mean([e["tau"] for e in es]), "weighted_tau": _mean([e["weighted_tau"] for e in es]),
            "losses": [{"round": r["round"], "choice": e["choice"], "top_leader": r["top_leader"],
                        "diff_ci": e["diff_ci"]} for r, e in per[rung] if e["lost_beyond_interval"]]})
    return {"top_rung": top, "direction": "maximize" if maximize else "minimize", "rounds": rounds,
            "rungs": summary}


def summary_lines(rt: dict[str, Any] | None) -> list[str]:
    """One line per rung, and one per round where a rung's choice lost beyond the interval."""
    lines = []
    for s in (rt or {}).get("rungs", []):
        name = level_name(s["rung"], s["fraction"])
        if s["tau"] is None:
            taus = "tau undefined: fewer than 2 candidates at both rungs"
        else:
            wt = "" if s["weighted_tau"] is None else f", weighted tau {s['weighted_tau']:.2f}"
            taus = f"tau {s['tau']:.2f}{wt}"
        lines.append(f"rank transfer: {name} chose as the top rung in {s['same_choice']} of {s['rounds']} "
                     f"rounds ({taus})")
        lines += [f"round {loss['round']}: rung {s['rung']}'s choice {loss['choice']} lost to {loss['top_leader']} "
                  "at the top rung beyond the interval" for loss in s["losses"]]
    return lines


def rank_transfer_metrics(rt: dict[str, Any] | None) -> dict[str, float]:
    """The parent run's metrics: rank_transfer/rung<r>/tau, .../weighted_tau, .../same_choice_share."""
    out = {}
    for s in (rt or {}).get("rungs", []):
        for name in ("tau", "weighted_tau", "same_choice_share"):
            if s[name] is not None:
                out[f"rank_transfer/rung{s['rung']}/{name}"] = s[name]
    return out
