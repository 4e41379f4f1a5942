"""The leaderboard as a rich table that stays readable in an 80-column terminal: settings equal in
every row move to one header line, dotted setting names are shortened to their last part (when
that stays unambiguous), values wrap rather than being cut, the objective is labelled with its
scale, and every number has one decimal."""
from __future__ import annotations

from typing import Any

from explorer.report.leaderboard import leaderboard, objective_harness, objective_name
from explorer.report.rank_transfer import rank_transfer, summary_lines
from explorer.report.rungs import RUNG_NOTE, row_rung, stopped_numbers, trial_rung
from explorer.report.scales import digits_for, fmt, fmt_ci, objective_label
from explorer.study.stats import tie_threshold


def _short(names: list[str]) -> dict[str, str]:
    """train.stages.sft.lr -> lr, unless two names would share the short form."""
    short = {n: n.rsplit(".", 1)[-1] for n in names}
    clash = {v for v in short.values() if list(short.values()).count(v) > 1}
    return {n: (n if short[n] in clash else short[n]) for n in names}


def _seeds(row: dict[str, Any]) -> str:
    done = f"{row['n']}/{row['planned']}" if row["planned"] != row["n"] else str(row["n"])
    return f"{done} sd {fmt(row['std'])}" if row["std"] is not None else done


def leaderboard_table(study, limit: int | None = None):
    """The rich Table of `eagle-explore leaderboard` (and the end of `run`)."""
    from rich.table import Table

    rows = leaderboard(study)
    shown = rows[:limit]
    settings: dict[str, list[str]] = {"experts": [r["experts"] for r in rows]}
    for k in sorted({k for r in rows for k in r["params"]}):
        settings[k] = [str(r["params"].get(k, "")) for r in rows]
    settings["round"] = ["" if r["round"] is None else str(r["round"]) for r in rows]
    varying = [k for k, vals in settings.items() if len(set(vals)) > 1]
    constant = {k: vals[0] for k, vals in settings.items() if k not in varying and vals and vals[0]}
    names = _short([k for k in varying if k not in ("experts", "round")])
    harness = objective_harness(study)
    obj, digits = objective_label(objective_name(study), harness), digits_for(harness)
    has = {"blind": any(r["blind"] is not None for r in rows), "ci": any(r["ci"] for r in rows),
           "seeds": any(r["n"] > 1 or r["partial"] for r in rows), "tie": any(r["tied"] for r in rows),
           "rung": any(r.get("rung") is not None for r in rows)}
    head = ", ".join(f"{_short([k])[k]} {v}" for k, v in constant.items())
    table = Table(title=f"{study.study_name}: leaderboard ({study.direction.name.lower()})",
                  caption=head or None, caption_justify="left")
    cols: list[tuple[str, Any]] = [("#", lambda r: str(r["rank"]))]
    if "experts" in varying:
        cols.append(("experts", lambda r: r["experts"]))
    cols += [(names[k], (lambda k: lambda r: str(r["params"].get(k, "")))(k)) for k in names]
    cols.append((obj, lambda r: fmt(r["value"], digits)))
    if has["ci"]:
        cols.append(("95% CI", lambda r: fmt_ci(r["ci"], digits)))
    if has["blind"]:
        cols.append(("blind", lambda r: fmt(r["blind"], digits)))
    if has["seeds"]:
        cols.append(("seeds", _seeds))
    if has["tie"]:
        cols.append(("tie", lambda r: f"P={r['p_beats_best']:.2f}" if r["tied"] and not r["best"]
                     else ("tied" if r["tied"] else "")))
    if has["rung"]:  # multi-fidelity: full, or the rung (and fraction of the SFT steps) it stopped at
        stopped = stopped_numbers(study)
        cols.append(("rung", lambda r: row_rung(r, stopped)))
    cols.append(("trial", lambda r: ",".join(map(str, r["trials"]))))
    if "round" in varying:
        cols.append(("round", lambda r: "" if r["round"] is None else str(r["round"])))
    numbers = (obj, "95% CI", "blind", "tie", "#")
    widest = max((len(r["experts"]) for r in shown), default=0)
    for name, _ in cols:  # numbers and expert sets never break; settings wrap (fold) instead of being cut
        table.add_column(name.replace(" (", "\n("), overflow="fold", no_wrap=name in numbers,
                         min_width=widest if name == "experts" else None,
                         justify="right" if name in numbers[:3] else "left")
    for r in shown:
        table.add_row(*[get(r) for _, get in cols])
    notes = [f"#{r['rank']} {r['experts']}: {r['note']}" for r in shown if r.get("note")]
    if has["tie"]:
        notes.append(f"tie: tied with #1, P(it beats #1) >= {tie_threshold(study):g} on paired bootstrap replicates")
    if has["rung"]:  # and how well each lower rung ranked as the top rung did
        notes += [RUNG_NOTE, *summary_lines(rank_transfer(study))]
    if notes:
        table.caption = "\n".join(filter(None, [head, *notes]))
    return table


def status_table(doc: dict[str, Any]):
    """The rich Table of `eagle-explore status`: one row per trial (and its rung, where rungs are)."""
    from rich.table import Table

    table = Table(title=f"{doc['study']}: " + ", ".join(f"{k.lower()} {v}" for k, v in doc["states"].items()))
    rungs = any(t.get("rung") is not None for t in doc["trials"])
    cols = ["#", "state", "experts", "value", "95% CI", "round", *(["rung"] if rungs else []), "candidate", "MLflow run"]
    for col in cols:
        table.add_column(col, overflow="fold")
    for t in doc["trials"]:
        table.add_row(str(t["number"]), t["state"], t["experts"], fmt(t["value"]), fmt_ci(t.get("objective_ci")),
                      "" if t["round"] is None else str(t["round"]), *([trial_rung(t)] if rungs else []),
                      t["candidate"] or "", t["mlflow_run_id"] or "")
    if rungs:
        table.caption = RUNG_NOTE
    return table
