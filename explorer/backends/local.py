"""Running trials: the Executor interface (local threads here; Ray implements the same), and the
LocalRunner that runs one real trial (`trainers.launch.run_trial`) as its own process group.

A runner is `runner(job) -> result dict` (result.json content, with "objective"); it raises
`optuna.TrialPruned` when `job.report(step, value)` says stop, anything else on failure."""
from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from trainers.training.preempt import PREEMPT_EXIT  # light: no torch

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


class LocalExecutor(Executor):
    def __init__(self, runner: Runner, max_concurrent: int) -> None:
        self.runner = runner
        self.max_concurrent = max_concurrent
        self._pool = cf.ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="trial")

    def submit(self, job: TrialJob) -> "cf.Future[TrialOutcome]":
        return self._pool.submit(run_job, self.runner, job)

    def shutdown(self, cancel: bool = False) -> None:
        if cancel and hasattr(self.runner, "terminate_all"):
            self.runner.terminate_all()  # type: ignore[attr-defined]
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


ExecutorFactory = Callable[..., Executor]
EXECUTORS: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    EXECUTORS[name] = factory


def build_executor(backend: str, runner: Runner, spec: Any, workdir: str | Path | None = None) -> Executor:
    """`optuna`: local threads; other backends (ray) register themselves on import."""
    if backend == "optuna":
        return LocalExecutor(runner, spec.resources.max_concurrent_trials)
    if backend not in EXECUTORS and backend in ("ray", "slurm"):
        try:  # registers the backend
            importlib.import_module("explorer.backends.ray_tune" if backend == "ray" else "explorer.backends.slurm")
        except ImportError as err:
            raise ValueError(f"backend {backend!r} is not available: {err}") from None
    if backend not in EXECUTORS:
        raise ValueError(f"unknown backend {backend!r} (known: optuna, {', '.join(EXECUTORS) or 'none registered'})")
    return EXECUTORS[backend](runner=runner, spec=spec, workdir=workdir)


def _eval_value(line: dict[str, Any], metric: str) -> float | None:
    for key in ("objective", metric):
        v = line.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    scores = line.get("scores")
    if isinstance(scores, dict) and isinstance(scores.get(metric), (int, float)):
        return float(scores[metric])
    return None


def process_groups(root: int) -> set[int]:
    """Process groups of `root` and all its descendants (torchrun starts its own session, so
    killing the launcher's group alone would leave the ranks running). Linux /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(entry))
    groups, todo = set(), [root]
    while todo:
        pid = todo.pop()
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
        todo.extend(children.get(pid, []))
    return groups


def kill_groups(groups: set[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class LocalRunner:
    """One real trial per call: `python -m explorer.backends.local SPEC OUT NPROC` in a new session
    (its torchrun ranks share that process group, killed as one). Streams eval lines of
    metrics.jsonl to job.report for pruning."""

    def __init__(self, python: str = sys.executable, poll_s: float = 1.0, kill_grace_s: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        self.python, self.poll_s, self.kill_grace_s, self.env = python, poll_s, kill_grace_s, env
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """A runner travels to a SLURM job without its live processes and lock."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_procs", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._procs, self._lock = {}, threading.Lock()

    def _kill(self, proc: subprocess.Popen) -> None:
        """SIGTERM the launcher's and its descendants' groups, SIGKILL what is left after a grace."""
        groups = process_groups(proc.pid) | {proc.pid}
        own = os.getpgid(0)
        groups.discard(own)  # never our own group
        kill_groups(groups, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace_s
        while time.monotonic() < deadline and any(self._alive(g) for g in groups):
            proc.poll()
            time.sleep(0.1)
        kill_groups(groups, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def _alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def terminate_all(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            self._kill(p)

    def __call__(self, job: TrialJob) -> dict[str, Any]:
        logs = job.trial_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / "launcher.log"
        cmd = [self.python, "-m", "explorer.backends.local", str(job.spec_path), str(job.trial_dir), str(job.nproc),
               *(["--restart"] if job.restart else [])]
        env = {**os.environ, **(self.env or {})}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        with self._lock:
            self._procs[job.number] = proc
        metrics, seen, pruned = job.trial_dir / "metrics.jsonl", 0, False
        try:
            while True:
                rc = proc.poll()
                seen, stop = self._stream(metrics, seen, job)
                if stop:
                    pruned = True
                    self._kill(proc)
                    break
                if rc is not None:
                    break
                time.sleep(self.poll_s)
        finally:
            with self._lock:
                self._procs.pop(job.number, None)
            if proc.poll() is None:
                self._kill(proc)
        if pruned:
            raise optuna.TrialPruned(f"trial {job.number} pruned")
        if proc.returncode == PREEMPT_EXIT:
            raise TrialPreemptedError(f"trial {job.number} pre-empted: checkpointed, to be continued")
        if proc.returncode != 0:
            from trainers.training.logging_utils import find_error

            lines = log_path.read_text(errors="replace").strip().splitlines()
            found = find_error(lines)  # the cause, not torchrun's wrapper or the last lines of a traceback
            cause = f"{found[0]}: {found[1]}" if found else " | ".join(lines[-5:])
            raise RunnerError(f"trial process exited with {proc.returncode} (log {log_path}): {cause}")
        result_path = job.trial_dir / "result.json"
        if not result_path.is_file():
            raise RunnerError(f"trial process exited 0 but wrote no {result_path}")
        return json.loads(result_path.read_text())

    @staticmethod
    def _stream(metrics: Path, seen: int, job: TrialJob) -> tuple[int, bool]:
        """Report eval lines appended since byte `seen`; True when the trial should stop."""
        if not metrics.is_file():
            return seen, False
        with open(metrics, "rb") as fh:
            fh.seek(seen)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # only whole lines; a partial one is read next time
        for raw in chunk[:end].splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict) and line.get("stage") == "eval":
                value = _eval_value(line, job.metric)
                if value is not None and job.report(int(line.get("step", 0)), value):
                    return seen + end, True
        return seen + end, False


def _watch_parent(parent: int) -> None:
    """If the controller dies, take the trial's processes (all groups below us) down with it."""
    while True:
        if os.getppid() != parent:
            groups = process_groups(os.getpid())
            groups.discard(os.getpgid(0))
            kill_groups(groups, signal.SIGKILL)
            os.killpg(0, signal.SIGKILL)
        time.sleep(1.0)


def main(argv: list[str]) -> int:
    restart = "--restart" in argv
    argv = [a for a in argv if a != "--restart"]
    if len(argv) != 3:
        sys.stderr.write("usage: python -m explorer.backends.local SPEC OUT_DIR NPROC [--restart]\n")
        return 2
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    from trainers.launch import TrialPreempted, run_trial  # only the trial process needs trainers

    try:
        run_trial(argv[0], argv[1], int(argv[2]), restart=restart)
    except TrialPreempted as err:
        logging.getLogger(__name__).warning("%s", err)
        return PREEMPT_EXIT
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
