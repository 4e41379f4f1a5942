"""The one Ray session shared by the Ray tests: a local instance with 2 CPUs (import the fixture)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """Yields the GCS address of a local Ray instance (num_cpus=2) that every Ray test shares."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address
        return
    # Ray workers import scripted runners by module name: the repo and this folder must be importable.
    paths = [str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
