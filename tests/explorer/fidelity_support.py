"""Scripted rung trials for the multi-fidelity tests (no tests here). They read their rung request
from the trial directory like the worker does, and keep a "checkpoint" there (the SFT steps done),
so a rung that did not continue the previous one shows. Picklable: on Ray and SLURM they run in
other processes, and record their calls in a file."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from test_study_fixtures import PAPER_AVG, letters

from trainers.eval.early_stop import EarlyStop
from trainers.stages.fidelity import fidelity_block, read_request, stop_step

STEPS = 40  # the scripted trials' full SFT steps
CKPT = "sim_sft_steps"  # the scripted trial's checkpoint: SFT steps done in this directory
HOLDING, RELEASED = "holding", "released"


TERMED = "termed"  # when the held trial got SIGTERM (in `marks`)


def _stop_on_term(marks: Path):
    def stop(signum, frame):
        (marks / TERMED).write_text(repr(time.time()))
        raise RuntimeError("stopped by SIGTERM while held")
    return stop


def paper_value(s, f):
    return PAPER_AVG[s] * (0.5 + 0.5 * f)


class RungRunner:
    """value(letters, fraction) is the objective. `kill_at`: the n-th call raises KeyboardInterrupt
    (the local controller dies with it running); `hold`: the trial of that key writes HOLDING in
    `marks` and waits for RELEASED there (or SIGTERM), then fails without a result (the controller
    was stopped meanwhile); `log`: a file that gets one JSON line per call; `spread`: the trials
    carry paired bootstrap replicates of that spread where their request asks for intervals."""

    def __init__(self, value=paper_value, kill_at: int | None = None, items=None, log: str | None = None,
                 hold: str | None = None, marks: str | None = None, spread: float | None = None) -> None:
        self.value, self.kill_at, self.items, self.spread = value, kill_at, items, spread
        self.log, self.hold, self.marks = log, hold, marks
        self.calls: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("lock", "calls")}

    def __setstate__(self, state):
        self.__dict__.update(state, lock=threading.Lock(), calls=[])

    def _hold(self, key: str) -> None:
        marks = Path(self.marks)
        if key != self.hold or (marks / RELEASED).exists():
            return
        (marks / HOLDING).write_text(key)
        if threading.current_thread() is threading.main_thread():  # a SLURM job: SIGTERM stops it, as a real trial
            signal.signal(signal.SIGTERM, _stop_on_term(marks))
        t0 = time.monotonic()
        while not (marks / RELEASED).exists() and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        raise RuntimeError(f"{key} released without a result")

    def __call__(self, job):
        req = read_request(job.trial_dir)
        f = req.fraction if req else 1.0
        key = job.user_attrs["key"]
        with self.lock:
            self.calls.append((key, job.trial_dir.name, f))
            if self.kill_at is not None and len(self.calls) == self.kill_at:
                raise KeyboardInterrupt  # the controller dies with this rung trial running
        if self.hold is not None:
            self._hold(key)
        ckpt = Path(job.trial_dir) / CKPT
        begun = int(ckpt.read_text()) if ckpt.is_file() else 0
        steps = stop_step(f, STEPS)
        if begun > steps:
            raise RuntimeError(f"{key}: the directory is at step {begun}, past this rung's {steps}")
        ckpt.write_text(str(steps))
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"key": key, "dir": job.trial_dir.name, "fraction": f, "begun": begun,
                                     "steps": steps, "pid": os.getpid(), "t": time.time()}) + "\n")
        v = self.value(letters(job), f)
        ev = None
        result = {"objective": v, "scores": {"avg": v}, "resumed_from": {"sft": begun}}
        if self.items is not None:  # per-item scores, and the early stop the request asks for
            scores = self.items(letters(job))
            ev = {"items_full": len(scores), "items_done": len(scores), "early_stopped": False}
            if req.early_stop is not None:
                stop = EarlyStop(req.early_stop.reference, req.early_stop.alpha, req.early_stop.min_items,
                                 req.early_stop.every)
                for i in range(0, len(scores), 8):
                    if stop.add("gqa", [str(q) for q in range(i, i + 8)], scores[i:i + 8]):
                        ev.update(items_done=i + 8, early_stopped=True)
                        break
            result["item_scores"] = {"gqa": {str(q): s for q, s in enumerate(scores[:ev["items_done"]])}}
        result["fidelity"] = fidelity_block(req, steps, STEPS, ev)
        if self.spread is not None and (req is None or req.final or req.intervals):
            result["bootstrap"] = {"objective": replicates(v, self.spread, job.user_attrs["experts"]),
                                   "items": "scripted", "confidence": 0.95}
        return result


def replicates(value: float, spread: float, label: str, n: int = 400) -> list[float]:
    """Bootstrap replicates as paired ones look: a part shared by every trial (the same resampled
    items) and a part of the trial's own, each of sd `spread`."""
    shared = np.random.default_rng(0).standard_normal(n)
    own = np.random.default_rng(int(hashlib.sha256(label.encode()).hexdigest()[:8], 16)).standard_normal(n)
    return list(value + spread * (shared + own))


def read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def continued(calls: list[dict]) -> bool:
    """Every logged call began where the last one in its directory stopped (0 for the first)."""
    last: dict[str, int] = {}
    for c in calls:
        if c["begun"] != last.get(c["dir"], 0):
            return False
        last[c["dir"]] = c["steps"]
    return True


def interrupt_when_held(marks: Path):
    """A progress callback that stops the controller (as Ctrl-C does) once the held trial runs; it
    releases the trial first, so that nothing waits on it."""
    def progress(_: dict) -> None:
        if (marks / HOLDING).exists() and not (marks / RELEASED).exists():
            (marks / RELEASED).write_text("")
            raise KeyboardInterrupt
    return progress


def completed(study) -> list[tuple[str, float]]:
    from optuna.trial import TrialState

    return sorted((t.user_attrs["key"], t.value) for t in study.get_trials() if t.state == TrialState.COMPLETE)


def stop_marks(study) -> list[tuple[str, int, int]]:
    from explorer.report.leaderboard import status_json

    return sorted((t["experts"], t["round"], t["stopped_at_rung"]) for t in status_json(study)["trials"]
                  if t["stopped_at_rung"] is not None)


def drive(workdir: str, backend: str, strategy: dict, resources: dict, hold: str) -> None:
    """A controller process for the kill tests: the scripted study, holding at `hold`."""
    from test_study_fixtures import study_data

    from explorer.controller import run_study
    from explorer.study.storage import default_storage_url
    from explorer.study.load import parse_study
    tmp = Path(workdir)
    spec = parse_study(study_data("fid", strategy, backend=backend, resources=resources), "fid.yaml", tmp)
    runner = RungRunner(log=str(tmp / "calls.jsonl"), hold=hold, marks=str(tmp / "marks"))
    run_study(spec, default_storage_url(tmp), tmp, runner=runner, backend=backend)
