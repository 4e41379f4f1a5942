"""What every backend shares: a trial job, its outcome, the runner that runs one (a callable
`runner(job) -> result dict`, result.json's content with "objective"; it raises `optuna.TrialPruned`
when `job.report(step, value)` says stop, anything else on failure) and the Executor interface that
runs many. Backends are looked up by name in explorer.backends.registry."""
from __future__ import annotations

import concurrent.futures as cf
import logging
import re
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

logger = logging.getLogger(__name__)


@dataclass
class TrialJob:
    number: int
    trial_dir: Path
    spec_path: Path
    params: dict[str, Any]
    user_attrs: dict[str, Any]  # round, candidate, seed, experts, attempt, key
    nproc: int = 1
    metric: str = "avg"
    # report(step, value) -> True when the pruner says stop
    report: Callable[[int, float], bool] = field(default=lambda step, value: False, repr=False)
    restart: bool = False  # the directory may hold another spec's progress: start over (moved aside)


def trial_dir_name(key: str) -> str:
    """A planned trial's directory, the same for all its attempts (so an attempt continues the
    previous one's checkpoints). Keys are "r2/A+B+F/s0"-like; anything unusual gets a checksum."""
    name = key.replace("/", "__")
    safe = re.sub(r"[^A-Za-z0-9+=,._-]", "_", name)
    return safe if safe == name else f"{safe}-{zlib.crc32(key.encode()):08x}"


@dataclass
class TrialOutcome:
    state: str  # complete | pruned | fail | preempted
    value: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    duration_s: float = 0.0
    restarts: int = 0  # in-place restarts the failure already used (Ray Train): they count as retries


Runner = Callable[[TrialJob], dict[str, Any]]


class RunnerError(RuntimeError):
    """A trial process failed (non-zero exit, killed rank, missing result). `restarts`: how often it
    was already restarted in place before giving up."""

    def __init__(self, message: str, restarts: int = 0) -> None:
        super().__init__(message)
        self.restarts = restarts


class TrialPreemptedError(RunnerError):
    """The trial checkpointed and stopped on a signal: requeued, not a failure (no retry spent)."""


def run_job(runner: Runner, job: TrialJob) -> TrialOutcome:
    """Run one job with any runner and classify what happened (never raises)."""
    t0 = time.monotonic()
    try:
        result = runner(job)
    except optuna.TrialPruned:
        return TrialOutcome("pruned", duration_s=time.monotonic() - t0)
    except TrialPreemptedError as err:
        logger.warning("trial %d: %s", job.number, err)
        return TrialOutcome("preempted", error=str(err), duration_s=time.monotonic() - t0)
    except Exception as err:  # every failure is recorded on the trial, then retried or kept FAIL
        msg = f"{type(err).__name__}: {err}".strip()
        logger.warning("trial %d failed: %s", job.number, msg.splitlines()[0] if msg else "")
        return TrialOutcome("fail", error=msg or type(err).__name__, duration_s=time.monotonic() - t0,
                            restarts=getattr(err, "restarts", 0))
    try:
        value = float(result["objective"])
    except (KeyError, TypeError, ValueError):
        return TrialOutcome("fail", result=result if isinstance(result, dict) else None,
                            error=f"result has no numeric 'objective': {str(result)[:200]}",
                            duration_s=time.monotonic() - t0)
    name = result.get("objective_name")
    if name is not None and name != job.metric:
        return TrialOutcome("fail", result=result, error=f"trial objective is {name!r}, the study optimizes "
                            f"{job.metric!r}", duration_s=time.monotonic() - t0)
    if value != value:  # NaN objective: a diverged trial is a failure, not a score
        return TrialOutcome("fail", result=result, error="objective is NaN", duration_s=time.monotonic() - t0)
    return TrialOutcome("complete", value=value, result=result, duration_s=time.monotonic() - t0)


class Executor(ABC):
    """Runs up to `max_concurrent` jobs at once; `submit` returns a future of TrialOutcome."""

    max_concurrent: int

    @abstractmethod
    def submit(self, job: TrialJob) -> "cf.Future[TrialOutcome]": ...

    @abstractmethod
    def shutdown(self, cancel: bool = False) -> None: ...

