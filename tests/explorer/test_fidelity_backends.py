"""Multi-fidelity rounds on the Ray and SLURM backends: the scripted greedy study of
test_fidelity.py, stopped (as Ctrl-C stops it) while a rung-1 trial runs and then resumed, makes
the local backend's uninterrupted decisions; every rung ran in another process (a Ray actor, a
SLURM job) and continued the previous rung's checkpoint in the planned trial's directory."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from conftest_ray import ray_cluster  # noqa: F401  (the shared Ray session)
from conftest_slurm import slurm_cluster  # noqa: F401  (the shared cluster)
from fidelity_support import (
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
from explorer.storage import default_storage_url, open_study
from explorer.study import parse_study

pytestmark = pytest.mark.slow

STRATEGY = {"type": "greedy", "base": ["A", "B"], "max_size": 3, "fidelity": {"schedule": "successive_halving"}}
HELD = "r1/A+B+C/s0@rung1"  # round 1's first rung-1 trial: C continues from its quarter of the steps
RESOURCES = {"max_concurrent_trials": 2}


def _run(tmp: Path, backend: str, runner, resources=RESOURCES, progress=None):
    spec = parse_study(study_data("fid", STRATEGY, backend=backend, resources=resources), "fid.yaml", tmp)
    out = run_study(spec, default_storage_url(tmp), tmp, runner=runner, backend=backend, progress=progress)
    return out, open_study(spec, default_storage_url(tmp))


def _interrupted_and_resumed(tmp_path: Path, backend: str, resources=RESOURCES):
    ref_dir, tmp = tmp_path / "local", tmp_path / backend
    ref_dir.mkdir(), tmp.mkdir()
    ref, ref_study = _run(ref_dir, "optuna", RungRunner())
    marks, log = tmp / "marks", tmp / "calls.jsonl"
    marks.mkdir()
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
def test_rungs_as_slurm_jobs_resume_after_an_interrupt_to_the_local_decisions(tmp_path):
    study, _ = _interrupted_and_resumed(tmp_path, "slurm", {**RESOURCES, "slurm": {"time_min": 10, "cpus_per_task": 1}})
    jobs = Counter(line.split()[0] for d in (tmp_path / "slurm" / "trials" / "fid").iterdir()
                   for line in (d / "slurm" / "jobs.log").read_text().splitlines())
    assert sum(jobs.values()) == len(study.get_trials())  # one SLURM job per rung attempt
