"""The SLURM backend against a real one-node SLURM: every attempt is a job; the greedy study takes
the local backend's path; a failing job is a recorded failure; a pre-empted real trial (SIGTERM to
its job, as SLURM sends before a time limit) checkpoints and continues in a new job."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest_slurm import ROOT, slurm_cluster  # noqa: F401  (the shared cluster)
from explorer.controller import run_study
from explorer.backends.slurm import sbatch_parameters
from explorer.study.storage import default_storage_url
from explorer.study.spec import SlurmOptions
from explorer.study.load import parse_study
from test_study_fixtures import PAPER_PATH, study_data
from test_study_fixtures import paper_runner as _paper

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def scripted_runner(job):
    """Runs inside the SLURM job: the paper's figures; A+B+D's job fails."""
    if job.user_attrs["experts"] == "A+B+D":
        raise RuntimeError("scripted failure in the job")
    return _paper(job)


def test_sbatch_parameters_carry_the_study_resources():
    opts = SlurmOptions(partition="gpu", account="lab", qos="high", time_min=90, nodes=2, gpus_per_node=8,
                        cpus_per_task=64, mem_gb=512, signal_delay_s=300, extra={"constraint": "h100"})
    params = sbatch_parameters(opts, "eagle-x-3")
    assert params["partition"] == "gpu" and params["account"] == "lab" and params["qos"] == "high"
    assert params["time"] == 90 and params["nodes"] == 2 and params["ntasks_per_node"] == 1
    assert params["gpus_per_node"] == 8 and params["cpus_per_task"] == 64 and params["mem"] == "512GB"
    assert params["additional_parameters"] == {"signal": "TERM@300", "no_requeue": True, "constraint": "h100"}


def test_the_greedy_study_runs_as_slurm_jobs_on_the_local_backends_path(tmp_path, slurm_cluster):
    data = study_data("slurm_greedy", {"type": "greedy", "base": ["A", "B"]}, backend="slurm",
                      resources={"max_concurrent_trials": 2, "slurm": {"time_min": 10, "cpus_per_task": 1}})
    spec = parse_study(data, "slurm.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=scripted_runner, backend="slurm")
    assert outcome.finished and outcome.greedy_path == PAPER_PATH  # what the local backend selects
    trials = optuna.load_study(study_name="slurm_greedy", storage=default_storage_url(tmp_path)).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["experts"] for t in failed] == ["A+B+D"]
    assert "scripted failure in the job" in failed[0].user_attrs["error"]
    jobs = [line.split() for d in (tmp_path / "trials" / "slurm_greedy").iterdir()
            for line in (d / "slurm" / "jobs.log").read_text().splitlines()]
    assert len(jobs) == len(trials) == 11 and len({j for _, j in jobs}) == 11  # one job per attempt


def _sft_steps(trial_dir: Path) -> list[int]:
    path = trial_dir / "metrics.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    return [m["step"] for m in lines if m.get("stage") == "sft"]


def test_a_preempted_real_trial_continues_from_its_checkpoint_in_a_new_job(tmp_path, slurm_cluster):
    base = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    for stage in base["train"]["stages"].values():
        stage.update(max_steps=2)
    base["train"]["stages"]["sft"].update(epochs=100, max_steps=60)
    base["train"]["checkpoint_every"] = 1000
    base["data"]["synthetic"].update(n_pretrain=16, n_sft=16, n_heldout=8)
    data = {"name": "slurm_pre", "strategy": {"type": "grid", "experts": ["A"], "axes": {"fusion": ["channel_concat"]}},
            "search_space": "eagle_tiny", "base_trial": base, "poll_interval_s": 0.2, "backend": "slurm",
            "objective": {"metric": "heldout_loss", "direction": "minimize"},
            "resources": {"slurm": {"time_min": 20, "cpus_per_task": 2}}}
    spec = parse_study(data, "pre.yaml", tmp_path)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(out=run_study(spec, default_storage_url(tmp_path), tmp_path,
                                                                      backend="slurm")))
    thread.start()
    trials_dir = tmp_path / "trials" / "slurm_pre"
    deadline = time.time() + 400
    while time.time() < deadline and thread.is_alive():
        dirs = list(trials_dir.glob("*")) if trials_dir.is_dir() else []
        if dirs and max(_sft_steps(dirs[0]), default=0) >= 3:
            break
        time.sleep(0.2)
    (trial_dir,) = list(trials_dir.glob("*"))
    first_job = (trial_dir / "slurm" / "jobs.log").read_text().split()[1]
    subprocess.run(["scancel", "--signal=TERM", first_job], check=True)  # what SLURM sends before a limit
    thread.join(timeout=600)
    assert not thread.is_alive() and box["out"].finished and box["out"].n_complete == 1
    result = json.loads((trial_dir / "result.json").read_text())
    assert [a["exit"] for a in result["attempts"]] == ["preempted", 0]
    stopped = result["attempts"][1]["resumed_from"]["sft"]
    assert stopped >= 3 and sorted(_sft_steps(trial_dir)) == list(range(1, 61))
    jobs = [line.split()[1] for line in (trial_dir / "slurm" / "jobs.log").read_text().splitlines()]
    assert len(jobs) == 2 and jobs[0] == first_job != jobs[1]  # the requeued attempt was a new job
    trials = optuna.load_study(study_name="slurm_pre", storage=default_storage_url(tmp_path)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["preempted"] and "error" not in trials[0].user_attrs
