"""Run by test_ray_nodes.py in its own process: a local Ray cluster of two 1-CPU worker nodes (the
head has none), and one trial of 2 Ray Train workers that can only fit one per node. Each worker
records where it ran; rank 0 writes the placement to result.json. Prints the trial's outcome."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def where_worker(config: dict[str, Any]) -> None:
    import ray
    import torch

    from trainers.training import distributed as D

    rank = int(os.environ["RANK"])
    me = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "local_rank": int(os.environ["LOCAL_RANK"]),
          "node": ray.get_runtime_context().get_node_id(),
          "ip": ray.util.get_node_ip_address(), "master": os.environ.get("MASTER_ADDR"),
          "sum": float(D.all_reduce(torch.tensor([rank + 1.0]))[0])}
    ranks = D.gather_objects(me)
    if rank == 0:
        (Path(config["out"]) / "result.json").write_text(json.dumps({"objective": 0.0, "ranks": ranks}))


def main(workdir: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from explorer.backends.base import TrialJob
    from explorer.backends.ray_tune import RayExecutor, RayTrainRunner

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    trial_dir = workdir / "trials" / "t" / "0"
    trial_dir.mkdir(parents=True)
    (trial_dir / "trial.yaml").write_text("name: t\n")
    job = TrialJob(number=0, trial_dir=trial_dir, spec_path=trial_dir / "trial.yaml", params={},
                   user_attrs={"attempt": 0}, nproc=2, metric="objective")
    ex = RayExecutor(RayTrainRunner(worker_fn=where_worker, prepare=False), max_concurrent=1, nproc=2,
                     cpus_per_worker=1, address=cluster.address)
    try:
        outcome = ex.submit(job).result(timeout=300)
    finally:
        ex.shutdown()
    doc = {"state": outcome.state, "error": outcome.error, "result": outcome.result,
           "worker_nodes": sorted(n.node_id for n in nodes)}
    ray.shutdown()
    cluster.shutdown()
    sys.stdout.write("OUTCOME " + json.dumps(doc) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
