"""Inside a Ray trial: a Ray Train TorchTrainer with two gloo workers (a dead worker restarted by
Ray Train's FailureConfig), and intermediate reports reaching the controller's pruner."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from conftest_ray import ray_cluster  # noqa: F401  (the shared Ray session)
from explorer.controller import run_study
from explorer.backends.local import LocalRunner
from explorer.backends.base import TrialJob
from explorer.backends.ray_tune import RayExecutor, RayTrainRunner
from explorer.study.storage import default_storage_url, open_study
from explorer.study.load import parse_study
from test_ray_support import ReportingRunner, ddp_worker
from test_study_fixtures import PAPER_AVG, study_data
from trainers.stages.fidelity import FidelityRequest, write_request

ROOT = Path(__file__).resolve().parents[2]


def _job(tmp: Path, number: int = 0) -> TrialJob:
    trial_dir = tmp / "trials" / "t" / str(number)
    trial_dir.mkdir(parents=True)
    spec = trial_dir / "trial.yaml"
    spec.write_text("name: t\n")
    return TrialJob(number=number, trial_dir=trial_dir, spec_path=spec, params={}, user_attrs={"attempt": 0},
                    nproc=2, metric="avg")


@pytest.mark.slow
def test_torchtrainer_trial_two_workers_survives_a_dead_worker(tmp_path, ray_cluster):
    runner = RayTrainRunner(worker_fn=ddp_worker, prepare=False)
    ex = RayExecutor(runner, max_concurrent=1, nproc=2, cpus_per_worker=0.5, worker_restarts=1,
                     storage_path=tmp_path / "ray_results")
    try:
        job = _job(tmp_path)
        outcome = ex.submit(job).result(timeout=240)
    finally:
        ex.shutdown()
    assert outcome.state == "complete", outcome.error
    r = outcome.result
    assert r["world_size"] == 2 and r["rank_sum"] == 3.0  # both ranks in one gloo process group
    assert r["attempts"] == 2 and (job.trial_dir / "rank1.died").is_file()  # restarted after the death
    assert -r["objective"] < 0.1 * r["first_loss"]  # DDP training converged
    assert outcome.value == pytest.approx(r["objective"])


@pytest.mark.slow
def test_torchtrainer_failure_is_a_fail_outcome_naming_the_trial(tmp_path, ray_cluster):
    runner = RayTrainRunner(worker_fn=ddp_worker, prepare=False)
    ex = RayExecutor(runner, max_concurrent=1, nproc=2, cpus_per_worker=0.5, worker_restarts=1,
                     storage_path=tmp_path / "ray_results")
    try:
        job = _job(tmp_path, 7)
        (job.trial_dir / "always_die").touch()
        outcome = ex.submit(job).result(timeout=240)
    finally:
        ex.shutdown()
    assert outcome.state == "fail"
    assert "TorchTrainer of trial 7 failed" in outcome.error
    assert outcome.restarts == 1  # restarted once in place: the controller counts it as a retry spent


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="max_concurrent must be >= 1, got 0"):
        RayExecutor(lambda job: {}, max_concurrent=0)


@pytest.mark.slow
def test_pruner_stops_a_ray_trial_from_its_intermediate_reports(tmp_path, ray_cluster):
    spec = parse_study(study_data("pruned", {"type": "greedy", "base": ["A", "B"], "max_size": 3},
                                  pruner={"type": "threshold", "options": {"lower": 655.0}},
                                  resources={"max_concurrent_trials": 2}), "pruned.yaml", tmp_path)
    out = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=ReportingRunner(), backend="ray")
    assert out.finished and out.greedy_path == ["A+B", "A+B+F"]
    trials = {t.user_attrs["experts"]: t for t in open_study(spec, default_storage_url(tmp_path)).get_trials()}
    # below the threshold (A+B+D 653.6): pruned at its first report, stopped early by Tune
    for experts in ("A+B+D",):
        t = trials[experts]
        avg = PAPER_AVG[frozenset(experts.split("+"))]
        assert t.state == TrialState.PRUNED and t.intermediate_values == {0: pytest.approx(avg)}
        assert int(Path(t.user_attrs["trial_dir"], "last_step").read_text()) < 4
    for experts in ("A+B", "A+B+C", "A+B+E", "A+B+F"):
        t = trials[experts]
        assert t.state == TrialState.COMPLETE and sorted(t.intermediate_values) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_real_tiny_trial_runs_the_trainers_worker_in_two_ray_train_workers(tmp_path, ray_cluster):
    """The default runner under Ray: prepare_trial, then trainers.stages.runner in each Ray Train worker, at
    a multi-fidelity rung (the request in the trial directory reaches the workers)."""
    data = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    data["data"]["synthetic"].update(n_pretrain=16, n_sft=16, n_heldout=8)
    for stage in data["train"]["stages"].values():
        stage.update(max_steps=2)
    job = _job(tmp_path)
    job.metric = "heldout_loss"
    job.spec_path.write_text(yaml.safe_dump(data))
    write_request(job.trial_dir, FidelityRequest(rung=0, fraction=0.5))
    ex = RayExecutor(LocalRunner(), max_concurrent=1, nproc=2, cpus_per_worker=0.5)
    assert isinstance(ex.runner, RayTrainRunner)  # the local torchrun runner becomes a TorchTrainer
    try:
        outcome = ex.submit(job).result(timeout=300)
    finally:
        ex.shutdown()
    assert outcome.state == "complete", outcome.error
    r = outcome.result
    assert r["world_size"] == 2 and r["objective_name"] == "heldout_loss"
    assert r["steps"]["sft"] == 1 and r["fidelity"]["steps_full"] == 2 and r["fidelity"]["stopped"]  # half the steps
    assert (job.trial_dir / "checkpoints" / "sft" / "step_0000001" / "COMPLETE").is_file()  # the next rung's start
    assert 0 < r["heldout_loss"] < 20 and outcome.value == pytest.approx(r["heldout_loss"])
    assert (job.trial_dir / "result.json").is_file() and (job.trial_dir / "metrics.jsonl").is_file()
    assert (tmp_path / "trials" / "t" / "cache").is_dir()  # stage-1 cache + synthetic data, shared by trials


def test_a_trial_bigger_than_the_cluster_is_a_clear_error(tmp_path, ray_cluster):
    ex = RayExecutor(RayTrainRunner(worker_fn=ddp_worker, prepare=False), max_concurrent=1, nproc=2,
                     cpus_per_worker=0.5, gpus_per_worker=1)
    with pytest.raises(ValueError, match=r"a trial needs 2 GPU .* but the Ray cluster has 0 in all"):
        ex.submit(_job(tmp_path))
    ex.shutdown()
    ex = RayExecutor(lambda job: {}, max_concurrent=1, cpus_per_worker=3)
    with pytest.raises(ValueError, match=r"a trial needs 3 CPU .* but the Ray cluster has 2 in all"):
        ex.submit(_job(tmp_path, 1))
    ex.shutdown()
