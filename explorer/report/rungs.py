"""How the terminal and exports show multi-fidelity rungs: "full" for a trial trained on all its
SFT steps, else its rung and the fraction of the steps it trained ("r0 1/4"), and "stopped" where
its candidate went no further (the study's stop marks, not merely "not promoted yet")."""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from explorer.strategies.fidelity import RUNG_ATTR, RUNGS_ATTR, fractions, stopped_marks
from explorer.study.handle import StoredStudy

RUNG_NOTE = ("rung: full = all the SFT steps; rR f = rung R, trained on fraction f of the SFT steps; "
             "stopped = ranked out at that rung (its values are not comparable with full rows)")


def fmt_rung(rung: int | None, top: bool, fraction: float | None = None, stopped: bool = False) -> str:
    if rung is None:
        return ""
    if top:
        text = "full"
    else:
        text = f"r{rung}" + (f" {Fraction(fraction).limit_denominator(1000)}" if fraction is not None else "")
    return f"{text} stopped" if stopped else text


def stopped_numbers(study) -> set[int]:
    return {int(n) for n in stopped_marks(StoredStudy.of(study))}


def row_rung(row: dict[str, Any], stopped: set[int]) -> str:
    """A leaderboard (or export table) row: its highest rung, and whether it stopped there."""
    return fmt_rung(row.get("rung"), not row.get("stopped"), row.get("fraction"),
                    any(n in stopped for n in row.get("trials", ())))


def trial_rung(rec: dict[str, Any]) -> str:
    """A status record (report.status_record): the trial's rung, "stopped" where its candidate did."""
    rung, rungs = rec.get("rung"), rec.get("rungs")
    top = rung is not None and rungs is not None and rung >= rungs - 1
    return fmt_rung(rung, top, (rec.get("fidelity") or {}).get("fraction"), rec.get("stopped_at_rung") is not None)


def rung_tag(user_attrs: dict[str, Any], spec: Any = None) -> str:
    """A rung trial's MLflow tag, from its user attrs (and the study's rung fractions)."""
    rung, rungs = user_attrs.get(RUNG_ATTR), user_attrs.get(RUNGS_ATTR)
    if rung is None or rungs is None:
        return ""
    fraction = (user_attrs.get("fidelity") or {}).get("fraction")
    fid = getattr(getattr(spec, "strategy", None), "fidelity", None)
    if fraction is None and fid is not None and rung < len(fractions(fid)):
        fraction = fractions(fid)[rung]
    return fmt_rung(rung, rung >= rungs - 1, fraction)
