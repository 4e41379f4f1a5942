"""Why a study achieved nothing. A study that ends with no complete trial, or with a round in which
every candidate failed, is a failure: `study_failure` says so, `failure_report` says why (failed
trials grouped by the error class their logs report, and the log tail of one of them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from optuna.trial import FrozenTrial, TrialState

from trainers.training.logging_utils import find_error

LOG_FILES = ("torchrun.log", "launcher.log")  # the trial's own log first, then its launcher's
TAIL_LINES = 12


@dataclass
class FailureClass:
    name: str
    example: str
    trials: list[int] = field(default_factory=list)
    log: Path | None = None


def study_failure(outcome) -> str | None:
    """Why a finished study counts as a failure (None: it achieved something)."""
    if outcome.n_complete == 0:
        return f"no trial of {outcome.n_trials} completed"
    for entry in outcome.path:
        cands = entry.get("candidates") or []
        if cands and not any("complete" in c.get("states", []) for c in cands):
            return f"round {entry.get('round')}: every candidate failed"
    return None


def _log_lines(trial: FrozenTrial) -> tuple[Path | None, list[str]]:
    folder = trial.user_attrs.get("log")
    for name in LOG_FILES if folder else ():
        path = Path(folder) / name
        if path.is_file():
            return path, path.read_text(errors="replace").splitlines()
    return None, []


def classify(trial: FrozenTrial) -> tuple[str, str, Path | None]:
    """(error class, one-line message, log file) of a failed trial: from its logs, else its error."""
    log, lines = _log_lines(trial)
    found = find_error(lines)
    if found is None:
        error = str(trial.user_attrs.get("error") or "")
        found = find_error(error.replace(" | ", "\n").splitlines()) or (
            error.split(":", 1)[0] or "unknown error", error.split(":", 1)[-1].strip().splitlines()[0] if error else "")
    return found[0], found[1], log


def failure_classes(trials: list[FrozenTrial]) -> list[FailureClass]:
    """Failed trials (with an error: interruptions are not failures) by class, largest first."""
    classes: dict[str, FailureClass] = {}
    for t in trials:
        if t.state != TrialState.FAIL or "error" not in t.user_attrs:
            continue
        name, message, log = classify(t)
        fc = classes.setdefault(name, FailureClass(name, message))
        fc.trials.append(t.number)
        fc.log = fc.log or log
    return sorted(classes.values(), key=lambda c: (-len(c.trials), c.name))


def failure_report(reason: str, trials: list[FrozenTrial], study_name: str) -> list[str]:
    """Lines for the terminal: the reason, each failure class, and the log tail of one failed trial."""
    lines = [f"study {study_name} failed: {reason}"]
    classes = failure_classes(trials)
    pruned = sum(1 for t in trials if t.state == TrialState.PRUNED)
    for fc in classes:
        numbers = ", ".join(map(str, fc.trials))
        lines.append(f"  {len(fc.trials)} x {fc.name} (trial{'s' if len(fc.trials) > 1 else ''} {numbers}): "
                     f"{fc.example[:300]}")
    if pruned:
        lines.append(f"  {pruned} pruned")
    logged = next((fc for fc in classes if fc.log is not None), None)
    if logged is not None:
        tail = logged.log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        lines.append(f"log of trial {logged.trials[0]}: {logged.log} (last {len(tail)} lines)")
        lines += [f"  | {ln}" for ln in tail]
    return lines

