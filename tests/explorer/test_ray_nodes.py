"""A multi-worker trial placed across Ray nodes: on a local cluster of two 1-CPU nodes a trial of 2
workers runs one worker on each, as ranks 0 and 1 of one process group meeting at rank 0's
address; and a multi-GPU trial asks Ray for one GPU per worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.slow
def test_a_two_worker_trial_spans_two_ray_nodes(tmp_path):
    pytest.importorskip("ray")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
           "RAY_AIR_NEW_OUTPUT": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(HERE / "ray_nodes_check.py"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("OUTCOME ")), None)
    assert proc.returncode == 0 and line, (proc.stdout[-2000:], proc.stderr[-3000:])
    doc = json.loads(line[len("OUTCOME "):])
    assert doc["state"] == "complete", doc["error"]
    ranks = sorted(doc["result"]["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert sorted(r["node"] for r in ranks) == doc["worker_nodes"]  # one worker on each node, none on the head
    # Ray numbers local ranks per host address (the device a worker takes): the simulated nodes share
    # one address here, distinct hosts would each have local rank 0
    assert all(r["local_rank"] == sum(o["ip"] == r["ip"] for o in ranks[:r["rank"]]) for r in ranks)
    assert ranks[0]["master"] == ranks[1]["master"] and all(r["sum"] == 3.0 for r in ranks)  # one group


def test_a_multi_gpu_trial_asks_for_one_gpu_per_worker():
    from explorer.backends.ray_tune import RayExecutor, RayTrainRunner

    ex = RayExecutor(RayTrainRunner(prepare=False), max_concurrent=1, nproc=8, cpus_per_worker=4, gpus_per_worker=1)
    bundles = ex.runner.scaling(8).as_placement_group_factory().bundles
    assert [b for b in bundles if b.get("GPU")] == [{"CPU": 4.0, "GPU": 1.0}] * 8
    ex.shutdown()
