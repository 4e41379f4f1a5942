"""Shared helpers for the controller tests (no tests here): the paper's greedy table as a scripted
objective, and a tiny study builder."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml

# Avg column of the paper's round-robin greedy table (PAPER_TABLES.md), by expert set.
PAPER_AVG: dict[frozenset[str], float] = {
    frozenset("AB"): 658.3,
    frozenset("ABC"): 660.3, frozenset("ABD"): 653.6, frozenset("ABE"): 660.1, frozenset("ABF"): 665.3,
    frozenset("ABFC"): 662.6, frozenset("ABFD"): 657.5, frozenset("ABFE"): 666.1,
    frozenset("ABFEC"): 666.5, frozenset("ABFED"): 660.0,
    frozenset("ABFECD"): 656.3,
}
PAPER_PATH = ["A+B", "A+B+F", "A+B+F+E", "A+B+F+E+C", "A+B+F+E+C+D"]

BASE_TRIAL: dict[str, Any] = {
    "seed": 0,
    "experts": [{"preset": "tiny-clip"}],
    "llm": {"preset": "tiny-llama", "template": "plain"},
    "data": {"synthetic": {"n_pretrain": 16, "n_sft": 16, "n_heldout": 8, "n_eval": 8}},
    "eval": {"benchmarks": ["gqa", "pope"], "limit": 8},
}


def letters(job) -> frozenset[str]:
    return frozenset(job.user_attrs["experts"].split("+"))


def paper_runner(job) -> dict[str, Any]:
    """Scripted trial: the paper's Avg for the expert set, read from the generated trial.yaml."""
    spec = yaml.safe_load(Path(job.spec_path).read_text())
    presets = {e["preset"] for e in spec["experts"]}
    assert len(presets) == len(letters(job))
    return {"objective": PAPER_AVG[letters(job)], "scores": {"avg": PAPER_AVG[letters(job)]}}


# A greedy study whose round 1 is an exact tie (A+B+E = A+B+F on seed 0; order keeps E) that extra
# seeds resolve for F; every other round has a clear leader.
TIE_WEIGHTS = {"C": 1.0, "D": -3.0, "E": 5.0, "F": 5.0}


def tied_runner(job) -> dict[str, Any]:
    s = letters(job)
    value = 650.0 + sum(TIE_WEIGHTS[x] for x in s - {"A", "B"})
    if s == frozenset("ABF") and job.user_attrs["seed"] > 0:
        value += 3.0
    return {"objective": value, "scores": {"avg": value}}


def study_data(name: str, strategy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    data = {"name": name, "strategy": strategy, "search_space": "eagle_tiny", "base_trial": dict(BASE_TRIAL),
            "heartbeat_interval_s": 1, "grace_period_s": 5, "poll_interval_s": 0.05}
    data.update(extra)
    return data


def write_study(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / f"{data.get('name', 'study')}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


HOLD_MARK = "holding"  # the file a holding trial writes in the work directory


class Hold(NamedTuple):
    """A trial that starts once `after` trials of `study` are COMPLETE writes `mark` and holds."""

    storage: str
    study: str
    after: int
    mark: str


class SleepyRunner:
    """Scripted runner that takes `seconds` per trial (to be killed mid-trial). With a `hold`, the
    holding trial takes `hold_s` instead, so a test can kill the controller at a known point
    whatever the machine's load."""

    def __init__(self, seconds: float, hold: Hold | None = None, hold_s: float = 600.0, score=None) -> None:
        self.seconds, self.hold, self.hold_s = seconds, hold, hold_s
        self.score = score or paper_runner

    def __call__(self, job) -> dict[str, Any]:
        if self._holding():
            Path(self.hold.mark).write_text(str(job.number))
            time.sleep(self.hold_s)
        else:
            time.sleep(self.seconds)
        return self.score(job)

    def _holding(self) -> bool:
        if self.hold is None:
            return False
        import optuna
        from optuna.trial import TrialState

        trials = optuna.load_study(study_name=self.hold.study, storage=self.hold.storage).get_trials()
        return sum(t.state == TrialState.COMPLETE for t in trials) >= self.hold.after


# A controller in its own process (to be SIGKILLed, or to run beside another worker). argv[1]: JSON
# {root, tests, data, workdir, storage, mode: run|worker, sleep, log, hold_from, tied}. Every trial it runs
# is appended to `log` as "pid number key". hold_from: a Hold after that many (mark: workdir/HOLD_MARK).
CHILD_SCRIPT = r'''
import json, os, sys
cfg = json.loads(sys.argv[1])
sys.path[:0] = [cfg["root"], cfg["tests"]]
from pathlib import Path
from explorer.controller import run_study, run_worker
from explorer.study.load import parse_study
from test_study_fixtures import HOLD_MARK, Hold, SleepyRunner, paper_runner, tied_runner

class LoggingRunner(SleepyRunner):
    def __call__(self, job):
        with open(cfg["log"], "a") as fh:
            fh.write(f"{os.getpid()} {job.number} {job.user_attrs['key']}\n")
        return super().__call__(job)

spec = parse_study(cfg["data"], "child.yaml", Path(cfg["workdir"]))
fn = run_study if cfg["mode"] == "run" else run_worker
hold = None if cfg["hold_from"] is None else Hold(cfg["storage"], cfg["data"]["name"], cfg["hold_from"],
                                                  str(Path(cfg["workdir"]) / HOLD_MARK))
score = tied_runner if cfg.get("tied") else paper_runner
out = fn(spec, cfg["storage"], cfg["workdir"], runner=LoggingRunner(cfg["sleep"], hold, score=score))
print(json.dumps({"path": out.greedy_path, "finished": out.finished}))
'''


def child_command(tmp: Path, data: dict[str, Any], storage: str, mode: str, sleep: float, log: Path,
                  hold_from: int | None = None, tied: bool = False) -> list[str]:
    import json
    import sys

    script = tmp / "child.py"
    script.write_text(CHILD_SCRIPT)
    here = Path(__file__).resolve().parent
    cfg = {"root": str(here.parents[1]), "tests": str(here), "data": data, "workdir": str(tmp),
           "storage": storage, "mode": mode, "sleep": sleep, "log": str(log), "hold_from": hold_from,
           "tied": tied}
    return [sys.executable, str(script), json.dumps(cfg)]
