"""Backends by name, in one registry: the study file and --backend take the same names, an unknown
one is one line naming the known, and 'optuna' (the local backend's older name) still loads."""
from __future__ import annotations

import pytest

from experts.errors import UnknownNameError
from explorer.backends.base import Executor
from explorer.backends.local import LocalExecutor
from explorer.backends.registry import BACKEND_NAMES, backend_name, build_executor
from explorer.study.load import load_study
from explorer.study.spec import StudyError
from test_study_fixtures import study_data, write_study

GREEDY = {"type": "greedy", "base": ["A", "B"], "max_size": 3, "candidates": ["C", "D"]}


def test_the_registry_names_every_backend():
    assert BACKEND_NAMES == ("local", "ray", "slurm")
    with pytest.raises(UnknownNameError, match="unknown backend 'lsf'; known: local, ray, slurm"):
        backend_name("lsf")


def test_a_study_file_takes_the_registry_names(tmp_path):
    assert load_study(write_study(tmp_path, study_data("a", GREEDY))).backend == "local"
    assert load_study(write_study(tmp_path, study_data("b", GREEDY, backend="optuna"))).backend == "local"
    with pytest.raises(StudyError) as err:
        load_study(write_study(tmp_path, study_data("c", GREEDY, backend="lsf")))
    assert "backend" in str(err.value) and "known: local, ray, slurm" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_local_entry_builds_a_thread_pool(tmp_path):
    spec = load_study(write_study(tmp_path, study_data("d", GREEDY)))
    executor = build_executor("local", lambda job: {"objective": 1.0}, spec)
    try:
        assert isinstance(executor, LocalExecutor) and isinstance(executor, Executor)
        assert executor.max_concurrent == spec.resources.max_concurrent_trials
    finally:
        executor.shutdown()
