"""The trial side of the Ray backend: what runs inside a Ray Tune trial. `tune_trial` runs one
job and reports its classified outcome; `RayTrainRunner` runs a real trial as a Ray Train
TorchTrainer whose workers run the trainers' per-process entry."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from pathlib import Path
from typing import Any

from explorer.backends.local import LocalRunner

from explorer.backends.base import Runner, RunnerError, TrialJob, run_job
from trainers import trial_dir as TD
logger = logging.getLogger(__name__)

_OUTCOME = "eagle_outcome"  # final result key: the TrialOutcome as JSON
_STEP, _VALUE = "eagle_step", "eagle_value"  # intermediate (pruning) reports


def job_to_config(job: TrialJob) -> dict[str, Any]:
    return {"number": job.number, "trial_dir": str(job.trial_dir), "spec_path": str(job.spec_path),
            "params": dict(job.params), "user_attrs": dict(job.user_attrs), "nproc": job.nproc, "metric": job.metric}


def job_from_config(cfg: dict[str, Any]) -> TrialJob:
    return TrialJob(number=cfg["number"], trial_dir=Path(cfg["trial_dir"]), spec_path=Path(cfg["spec_path"]),
                    params=dict(cfg["params"]), user_attrs=dict(cfg["user_attrs"]), nproc=int(cfg["nproc"]),
                    metric=cfg["metric"])


def _tune_report(step: int, value: float) -> bool:
    """A job's pruning report from inside a Tune trial: the driver's stopper decides and stops us."""
    from ray import tune

    tune.report({_STEP: int(step), _VALUE: float(value)})
    return False


def trial_name(trial) -> str:
    """Tune's name for a trial: the study's trial number (not the flattened config)."""
    return f"trial-{trial.config['job']['number']}"


def tune_trial(config: dict[str, Any], runner: Runner) -> None:
    """The Tune trainable: run one job and report its classified outcome (never raises for a
    trial's own failure; a raise here means the trial's process itself broke)."""
    from ray import tune

    job = job_from_config(config["job"])
    job.report = _tune_report
    outcome = run_job(runner, job)
    tune.report({_OUTCOME: json.dumps(dataclasses.asdict(outcome))})


def trainer_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker of a real trial: the trainers' per-process entry (Ray Train has set up
    torch.distributed and RANK/WORLD_SIZE/LOCAL_RANK, so it runs exactly as under torchrun)."""
    from trainers.stages.runner import main

    rc = main(["--spec", config["spec"], "--out", config["out"], "--cache-dir", config["cache_dir"]])
    if rc:
        raise RuntimeError(f"trainers.stages.runner exited with {rc}")


@dataclasses.dataclass(frozen=True)
class RayTrainRunner:
    """Runs a job as a Ray Train TorchTrainer with `job.nproc` workers (they may span nodes).

    `worker_fn(config)` runs in every worker with config {spec, out, cache_dir}; `prepare` validates
    the spec and generates the synthetic data once (trainers.launch.prepare_trial) before workers
    start. The trial directory must be on storage the workers share (result.json is read from it)."""

    worker_fn: Any = trainer_worker
    prepare: bool = True
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0  # worker-group restarts (a dead worker resumes from the trial's checkpoints)
    poll_s: float = 1.0

    def configured(self, **kw: Any) -> "RayTrainRunner":
        return dataclasses.replace(self, **kw)

    def scaling(self, nproc: int):
        """Ray Train's placement of a trial: `nproc` workers, each its CPUs and GPUs, packed onto as
        few nodes as hold them (a worker never splits across nodes)."""
        from ray.train import ScalingConfig

        resources = {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}
        return ScalingConfig(num_workers=nproc, use_gpu=self.gpus_per_worker > 0, resources_per_worker=resources)

    def __call__(self, job: TrialJob) -> dict[str, Any]:
        import optuna
        from ray.train import FailureConfig, RunConfig
        from ray.train.torch import TorchTrainer

        out = Path(job.trial_dir)
        if self.prepare:
            from trainers.launch import prepare_trial

            _, spec_path, cache = prepare_trial(job.spec_path, out, job.nproc)
        else:
            spec_path, cache = Path(job.spec_path), out.parent / "cache"
        attempt = job.user_attrs.get("attempt", 0)
        trainer = TorchTrainer(
            self.worker_fn,
            train_loop_config={"spec": str(spec_path), "out": str(out), "cache_dir": str(cache)},
            scaling_config=self.scaling(job.nproc),
            run_config=RunConfig(name=f"trial-{job.number}-attempt-{attempt}", storage_path=str(out / "ray_train"),
                                 failure_config=FailureConfig(max_failures=self.max_failures)),
        )
        box: dict[str, BaseException] = {}

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as err:  # re-raised in the trial's thread below
                box["error"] = err

        thread = threading.Thread(target=fit, name=f"torchtrainer-{job.number}", daemon=True)
        thread.start()
        seen = 0
        while thread.is_alive():
            thread.join(self.poll_s)
            seen, stop = LocalRunner._stream(out / TD.METRICS, seen, job)
            if stop:
                raise optuna.TrialPruned(f"trial {job.number} pruned")
        if "error" in box:
            msg = str(box["error"]).strip().splitlines()
            last = msg[-1] if msg else type(box["error"]).__name__
            raise RunnerError(f"TorchTrainer of trial {job.number} failed: {last}", restarts=self.max_failures)
        result = TD.read_result(out)
        if result is None:
            raise RunnerError(f"TorchTrainer of trial {job.number} finished but wrote no readable {out / TD.RESULT}")
        return result
