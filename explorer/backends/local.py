"""The local backend: trials as processes on this machine, up to `resources.max_concurrent_trials` at
once. LocalRunner runs one real trial (`python -m trainers.launch ... --die-with-parent`) in its own
session, so its torchrun ranks are killed as one."""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna

from explorer.backends.base import Executor, Runner, RunnerError, TrialJob, TrialOutcome, TrialPreemptedError, run_job
from trainers.training.preempt import PREEMPT_EXIT  # light: no torch
from trainers.training.processes import kill_groups, process_groups
from trainers import trial_dir as TD


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


def make_local_executor(runner: Runner, spec: Any, workdir: str | Path | None = None) -> LocalExecutor:
    """The `local` entry of explorer.backends.registry.BACKENDS."""
    return LocalExecutor(runner, spec.resources.max_concurrent_trials)


def _eval_value(line: dict[str, Any], metric: str) -> float | None:
    for key in ("objective", metric):
        v = line.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    scores = line.get("scores")
    if isinstance(scores, dict) and isinstance(scores.get(metric), (int, float)):
        return float(scores[metric])
    return None


class LocalRunner:
    """One real trial per call: `python -m trainers.launch SPEC --out OUT --nproc N` in a new session
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
        logs = job.trial_dir / TD.LOGS
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / "launcher.log"
        cmd = [self.python, "-m", "trainers.launch", str(job.spec_path), "--out", str(job.trial_dir), "--nproc",
               str(job.nproc), "--die-with-parent", *(["--restart"] if job.restart else [])]
        env = {**os.environ, **(self.env or {})}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        with self._lock:
            self._procs[job.number] = proc
        metrics, seen, pruned = job.trial_dir / TD.METRICS, 0, False
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
        result = TD.read_result(job.trial_dir)
        if result is None:
            raise RunnerError(f"trial process exited 0 but wrote no readable {job.trial_dir / TD.RESULT}")
        return result

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
