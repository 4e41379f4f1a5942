"""One trial on two nodes, on the real local SLURM: two tasks of one step stand for two nodes (each
its own node rank, one process each). `srun -n 2 python -m trainers.launch ... --nproc 1` and the
SLURM backend's multi-node job both run every stage with world size 2 and end with the numbers of
the same trial as 2 processes on one node."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest_slurm import ROOT, slurm_cluster  # noqa: F401  (the shared cluster)
from explorer.backends.base import TrialJob
from explorer.backends.slurm import run_in_job, sbatch_parameters
from explorer.study.spec import SlurmOptions
from trainers import trial_dir as TD
from trainers.launch import run_trial

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> Path:
    d = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    for stage in d["train"]["stages"].values():
        stage.update(max_steps=3)
    d["data"]["synthetic"].update(n_pretrain=32, n_sft=32, n_heldout=8)
    d["eval"]["benchmarks"] = ["gqa"]
    d["eval"]["limit"] = 8
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def one_node(tiny_spec, tmp_path_factory) -> dict:
    return run_trial(tiny_spec, tmp_path_factory.mktemp("one_node") / "trial", nproc=2, timeout_s=600)


def _same_numbers(result: dict, reference: dict) -> None:
    assert result["world_size"] == 2
    assert result["heldout_loss"] == pytest.approx(reference["heldout_loss"], rel=1e-6)
    assert result["scores"] == reference["scores"]
    assert result["steps"] == reference["steps"] and set(result["steps"]) == {"align_expert", "align_projector", "sft"}
    for stage, loss in reference["loss"].items():
        assert result["loss"][stage] == pytest.approx(loss, rel=1e-6)


def test_srun_two_tasks_run_one_trial_as_two_nodes(tiny_spec, one_node, tmp_path, slurm_cluster):
    out = tmp_path / "trial"
    proc = subprocess.run(["srun", "-n", "2", "--cpus-per-task", "1", "--time", "15", sys.executable, "-m",
                           "trainers.launch", str(tiny_spec), "--out", str(out), "--nproc", "1"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # node 0 reports the trial, node 1 only runs its rank
    result = json.loads((out / TD.RESULT).read_text())
    _same_numbers(result, one_node)
    assert [a["exit"] for a in result["attempts"]] == [0]
    assert (out / TD.LOGS / "torchrun.node1.log").stat().st_size > 0  # node 1's own torchrun
    assert json.loads((out / TD.LOGS / TD.PREPARED).read_text())["run_id"].startswith("slurm-")


def test_the_slurm_backends_multi_node_job_runs_the_trial_on_both_tasks(tiny_spec, one_node, tmp_path, slurm_cluster):
    import submitit

    job = TrialJob(number=0, trial_dir=tmp_path / "trial", spec_path=tiny_spec, params={}, user_attrs={})
    ex = submitit.SlurmExecutor(folder=tmp_path / "slurm", max_num_timeout=0)
    params = sbatch_parameters(SlurmOptions(time_min=15, nodes=2, cpus_per_task=1), "eagle-nodes")
    ex.update_parameters(**{**params, "nodes": 1, "ntasks_per_node": 2})  # two tasks stand for two nodes
    node0, node1 = ex.submit(run_in_job, None, job, 2).results()  # what the backend reads: task 0's
    assert node1 == {"result": None}, node1
    out = node0
    assert "result" in out, out
    _same_numbers(out["result"], one_node)
    assert (job.trial_dir / TD.LOGS / "torchrun.node1.log").is_file()


def test_a_multi_node_job_with_one_task_is_an_error(tiny_spec, tmp_path, monkeypatch):
    for k in ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    job = TrialJob(number=0, trial_dir=tmp_path / "trial", spec_path=tiny_spec, params={}, user_attrs={})
    out = run_in_job(None, job, 2)
    assert out == {"error": "RunnerError: a 2-node trial job runs 1 SLURM task(s); it needs one task per node"}
