"""Multi-fidelity rounds on the Ray and SLURM backends: the scripted greedy study of
test_fidelity.py, stopped while a rung-1 trial runs (Ray: as Ctrl-C stops it; SLURM: the
controller process SIGKILLed, its jobs left running) and then resumed, makes the local backend's
uninterrupted decisions; every rung ran in another process (a Ray actor, a SLURM job) and
continued the previous rung's checkpoint in the planned trial's directory."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest_ray import ray_cluster  # noqa: F401  (the shared Ray session)
from conftest_slurm import slurm_cluster  # noqa: F401  (the shared cluster)
from fidelity_support import (
    HOLDING,
    TERMED,
    RungRunner,
    completed,
    continued,
    interrupt_when_held,
    read_log,
    stop_marks,
)
from optuna.trial import TrialState
from test_study_fixtures import study_data

from explorer.controller import run_study
from explorer.study.storage import default_storage_url, open_study
from explorer.study.load import parse_study
pytestmark = pytest.mark.slow

STRATEGY = {"type": "greedy", "base": ["A", "B"], "max_size": 3, "fidelity": {"schedule": "successive_halving"}}
HELD = "r1/A+B+C/s0@rung1"  # round 1's first rung-1 trial: C continues from its quarter of the steps
RESOURCES = {"max_concurrent_trials": 2}
HERE = Path(__file__).resolve().parent


def _run(tmp: Path, backend: str, runner, resources=RESOURCES, progress=None):
    spec = parse_study(study_data("fid", STRATEGY, backend=backend, resources=resources), "fid.yaml", tmp)
    out = run_study(spec, default_storage_url(tmp), tmp, runner=runner, backend=backend, progress=progress)
    return out, open_study(spec, default_storage_url(tmp))


def _kill_when_held(tmp: Path, backend: str, resources) -> None:
    """The controller in its own process, SIGKILLed once the held trial runs."""
    code = (f"import sys; sys.path[:0] = [{str(HERE.parents[1])!r}, {str(HERE)!r}]; from fidelity_support import "
            f"drive; drive({str(tmp)!r}, {backend!r}, {STRATEGY!r}, {resources!r}, {HELD!r})")
    with open(tmp / "controller.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (tmp / "marks" / HOLDING).exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "controller.log").read_text()[-2000:]
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


def _interrupted_and_resumed(tmp_path: Path, backend: str, resources=RESOURCES, hard: bool = False):
    ref_dir, tmp = tmp_path / "local", tmp_path / backend
    ref_dir.mkdir(), tmp.mkdir()
    ref, ref_study = _run(ref_dir, "local", RungRunner())
    marks, log = tmp / "marks", tmp / "calls.jsonl"
    marks.mkdir()
    if hard:
        _kill_when_held(tmp, backend, resources)
        runner = RungRunner(log=str(log))  # the held job still waits: the next attempt ends it first
    else:
        runner = RungRunner(log=str(log), hold=HELD, marks=str(marks))
        with pytest.raises(KeyboardInterrupt):
            _run(tmp, backend, runner, resources, progress=interrupt_when_held(marks))
    out, study = _run(tmp, backend, runner, resources)
    assert out.finished and out.greedy_path == ref.greedy_path == ["A+B", "A+B+F"]
    assert out.best_value == ref.best_value
    assert completed(study) == completed(ref_study) and len(completed(study)) == 8
    assert stop_marks(study) == stop_marks(ref_study) == [("A+B+C", 1, 1), ("A+B+D", 1, 0), ("A+B+E", 1, 0)]
    interrupted = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert HELD in {t.user_attrs["key"] for t in interrupted}
    assert all(t.user_attrs.get("interrupted") and "error" not in t.user_attrs for t in interrupted)
    calls = read_log(log)
    assert continued(calls)  # each rung began at the previous rung's checkpoint, in the one directory
    assert [c["begun"] for c in calls if c["key"] == HELD] == [10]  # resumed: 1/4 of 40 steps done
    assert {c["dir"] for c in calls if c["key"].startswith("r1/A+B+F/s0")} == {"r1__A+B+F__s0"}
    assert all(c["pid"] != os.getpid() for c in calls)  # every rung ran on the backend, not here
    return study, calls


@pytest.mark.usefixtures("ray_cluster")
def test_rungs_on_ray_resume_after_an_interrupt_to_the_local_decisions(tmp_path):
    _interrupted_and_resumed(tmp_path, "ray", {**RESOURCES, "cpus_per_worker": 1})


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_rungs_as_slurm_jobs_resume_after_the_controller_is_killed_to_the_local_decisions(tmp_path):
    slurm = {"time_min": 10, "cpus_per_task": 1, "signal_delay_s": 2}
    study, calls = _interrupted_and_resumed(tmp_path, "slurm", {**RESOURCES, "slurm": slurm}, hard=True)
    jobs = Counter(line.split()[0] for d in (tmp_path / "slurm" / "trials" / "fid").iterdir()
                   for line in (d / "slurm" / "jobs.log").read_text().splitlines())
    assert sum(jobs.values()) == len(study.get_trials())  # one SLURM job per rung attempt
    # the held job the dead controller left running was ended (SIGTERM) before its trial ran again
    (again,) = [c["t"] for c in calls if c["key"] == HELD]
    assert float((tmp_path / "slurm" / "marks" / TERMED).read_text()) < again
    assert subprocess.run(["squeue", "-h", "-o", "%i"], check=True, capture_output=True, text=True).stdout.strip() == ""
