"""The driver side of the Ray backend: the controller's Executor, every trial a Ray Tune trial.

One long-lived `Tuner.fit()` runs in a driver thread. Its searcher (`JobQueueSearcher`) proposes
exactly the jobs the controller submitted and answers "nothing yet" while the queue is empty, so
the controller's plan (greedy round barrier, grid cells, TPE asks, retries) decides what runs and
Tune decides where. `max_concurrent_trials` caps trials at once. Outcomes come back through a Tune
callback into the futures the controller waits on, so the Optuna database stays the only record of
the study (`status`, MLflow and resume are the same on both backends).

Inside a Tune trial the job runs as `run_job(runner, job)`: a real trial (the default runner) is a
Ray Train `TorchTrainer` (`RayTrainRunner`), a scripted runner (tests) is called directly.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.search import Searcher

from explorer.backends.local import LocalRunner

from explorer.backends.base import Executor, Runner, TrialJob, TrialOutcome
from explorer.backends.ray_tune.trial import _OUTCOME, _STEP, _VALUE, RayTrainRunner, job_to_config, trial_name, tune_trial

logger = logging.getLogger(__name__)

# A Tune trial that only coordinates a TorchTrainer holds no CPU (its workers reserve their own);
# Ray needs some resource in a bundle, so it asks for a token amount of memory.
_COORDINATOR = {"cpu": 0, "memory": 1 << 20}

# Live executors by key: Tune pickles its searcher, callbacks and stopper into the experiment
# state, so they hold a key, never the executor (its locks and futures cannot be pickled).
_LIVE: dict[str, "RayExecutor"] = {}


class _Bound:
    def __init__(self, key: str) -> None:
        self.key = key

    @property
    def ex(self) -> "RayExecutor":
        return _LIVE[self.key]


class JobQueueSearcher(_Bound, Searcher):
    """Proposes the controller's submitted jobs in order; None (wait) while there are none."""

    def __init__(self, key: str) -> None:
        _Bound.__init__(self, key)
        Searcher.__init__(self, metric=None, mode=None)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.ex._closing.is_set():
            return Searcher.FINISHED
        try:
            job, fut = self.ex._queue.get_nowait()
        except queue.Empty:
            return None
        if not fut.set_running_or_notify_cancel():
            return None  # cancelled before Tune picked it up
        self.ex._bind(trial_id, job, fut)
        return {"job": job_to_config(job)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # outcomes are resolved by the callback, which also sees the error text

    # The study database holds the queue's truth (a resumed driver re-plans from it): nothing to save.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


class OutcomeCallback(_Bound, Callback):
    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ex._resolve(trial.trial_id, trial.last_result, None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        err = trial.get_error()
        self.ex._resolve(trial.trial_id, trial.last_result, str(err) if err else "Ray trial failed")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        logger.warning("Ray trial %s (job %s) failed; Ray retries it", trial.trial_id,
                       self.ex._numbers.get(trial.trial_id))


class PruneStopper(_Bound, Stopper):
    """Forwards intermediate values to the controller's pruner; stops pruned trials, or all."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if _STEP in result and _VALUE in result:
            return self.ex._report(trial_id, int(result[_STEP]), float(result[_VALUE]))
        return False

    def stop_all(self) -> bool:
        return self.ex._abort.is_set()


class RayExecutor(Executor):
    """Runs the controller's jobs as Ray Tune trials on a local or existing Ray cluster."""

    def __init__(self, runner: Runner, max_concurrent: int, *, nproc: int = 1, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, address: str | None = None, storage_path: str | Path | None = None,
                 worker_restarts: int = 0, experiment_name: str = "eagle", init_kwargs: dict[str, Any] | None = None
                 ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        if isinstance(runner, LocalRunner):  # the default real-trial runner: a TorchTrainer under Ray
            runner = RayTrainRunner()
        if isinstance(runner, RayTrainRunner):
            runner = runner.configured(cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                                       max_failures=worker_restarts)
            resources: dict[str, float] = dict(_COORDINATOR)
        else:  # a scripted runner does its work inside the Tune trial itself
            resources = {"cpu": cpus_per_worker, "gpu": gpus_per_worker}
        self.runner, self.max_concurrent, self.nproc = runner, max_concurrent, nproc
        self.resources, self.address, self.worker_restarts = resources, address, worker_restarts
        self.storage_path = Path(storage_path) if storage_path is not None else None
        self.experiment_name, self.init_kwargs = experiment_name, dict(init_kwargs or {})
        self._queue: "queue.Queue[tuple[TrialJob, cf.Future]]" = queue.Queue()
        self._lock = threading.Lock()
        self._futures: dict[str, cf.Future] = {}
        self._jobs: dict[str, TrialJob] = {}
        self._numbers: dict[str, int] = {}
        self._pruned: set[str] = set()
        self._t_start: dict[str, float] = {}
        self._closing, self._abort = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._fit_error: BaseException | None = None
        self._started_ray = False
        self._key = f"{os.getpid()}-{id(self)}"
        _LIVE[self._key] = self

    # -- controller side ------------------------------------------------------------------
    def submit(self, job: TrialJob) -> "cf.Future[TrialOutcome]":
        if self._closing.is_set():
            raise RuntimeError("the Ray executor is shut down")
        if self._fit_error is not None:
            raise RuntimeError(f"the Ray Tune run stopped: {self._fit_error}")
        self._ensure_running(job)
        fut: cf.Future = cf.Future()
        self._queue.put((job, fut))
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        self._closing.set()
        if cancel:
            self._abort.set()
        while True:  # jobs Tune never picked up
            try:
                _, fut = self._queue.get_nowait()
            except queue.Empty:
                break
            fut.cancel()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            leftover = list(self._futures.items())
            self._futures.clear()
        for _, fut in leftover:  # cancelled trials: the controller marks them interrupted
            if not fut.done():
                fut.set_result(TrialOutcome("fail", error="interrupted: the Ray executor shut down"))
        _LIVE.pop(self._key, None)
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    # -- Tune side (called from Tune's thread) ------------------------------------------
    def _bind(self, trial_id: str, job: TrialJob, fut: cf.Future) -> None:
        with self._lock:
            self._futures[trial_id], self._jobs[trial_id] = fut, job
            self._numbers[trial_id] = job.number
            self._t_start[trial_id] = time.monotonic()
        logger.info("trial %d runs as Ray Tune trial %s", job.number, trial_id)

    def _report(self, trial_id: str, step: int, value: float) -> bool:
        job = self._jobs.get(trial_id)
        if job is None or not job.report(step, value):
            return False
        self._pruned.add(trial_id)
        return True

    def _resolve(self, trial_id: str, last: dict[str, Any] | None, error: str | None) -> None:
        with self._lock:
            fut = self._futures.pop(trial_id, None)
            self._jobs.pop(trial_id, None)
            t0 = self._t_start.pop(trial_id, time.monotonic())
        if fut is None or fut.done():
            return
        duration = time.monotonic() - t0
        if trial_id in self._pruned:
            self._pruned.discard(trial_id)
            outcome = TrialOutcome("pruned", duration_s=duration)
        elif last and _OUTCOME in last:
            outcome = TrialOutcome(**json.loads(last[_OUTCOME]))
        elif self._abort.is_set():
            outcome = TrialOutcome("fail", error="interrupted: the Ray executor shut down", duration_s=duration)
        else:
            first = (error or "Ray trial ended without an outcome").strip().splitlines()
            # Tune already re-ran the trial worker_restarts times (FailureConfig)
            outcome = TrialOutcome("fail", error=f"RayTrialError: {first[-1] if first else error}", duration_s=duration,
                                   restarts=self.worker_restarts)
        fut.set_result(outcome)

    # -- the Tune run ---------------------------------------------------------------------
    def _ensure_running(self, job: TrialJob) -> None:
        if self._thread is not None:
            return
        self._connect()
        self._check_fits(job)
        if self.storage_path is None:  # <workdir>/trials/<study>/<n> -> <workdir>/ray_results
            self.storage_path = Path(job.trial_dir).resolve().parents[2] / "ray_results"
        tuner = self._build_tuner()
        self._thread = threading.Thread(target=self._fit, args=(tuner,), name="ray-tune", daemon=True)
        self._thread.start()

    def _check_fits(self, job: TrialJob) -> None:
        """A trial that the whole cluster cannot hold would wait forever in Tune: say so instead."""
        import ray

        have = ray.cluster_resources()
        if isinstance(self.runner, RayTrainRunner):
            need = {"CPU": self.runner.cpus_per_worker * job.nproc, "GPU": self.runner.gpus_per_worker * job.nproc}
        else:
            need = {"CPU": float(self.resources.get("cpu", 0)), "GPU": float(self.resources.get("gpu", 0))}
        for kind, amount in need.items():
            if amount > have.get(kind, 0.0) + 1e-9:
                self._closing.set()
                raise ValueError(f"a trial needs {amount:g} {kind} (resources: nproc_per_trial x "
                                 f"{kind.lower()}s_per_worker) but the Ray cluster has {have.get(kind, 0.0):g} in all")

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
        logger.info("connecting to Ray at %s", address or "a new local instance")
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:
            raise RuntimeError(f"cannot reach the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
        self._started_ray = address is None

    def _build_tuner(self):
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables in the CLI; progress is ours
        from ray import tune

        searcher, callback, stopper = JobQueueSearcher(self._key), OutcomeCallback(self._key), PruneStopper(self._key)
        trainable = tune.with_resources(tune.with_parameters(tune_trial, runner=self.runner), self.resources)
        name = f"{self.experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=self.max_concurrent,
                                        reuse_actors=True, trial_name_creator=trial_name,
                                        trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(name=name, storage_path=str(self.storage_path), stop=stopper,
                                      callbacks=[callback], verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=self.worker_restarts)),
        )

    def _fit(self, tuner) -> None:
        try:
            tuner.fit()
        except BaseException as err:  # surfaced to the controller through every pending future
            self._fit_error = err
            logger.error("the Ray Tune run stopped: %s", err)
        finally:
            with self._lock:
                pending = list(self._futures.values())
                self._futures.clear()
            for fut in pending:
                if not fut.done():
                    fut.set_result(TrialOutcome("fail", error=f"interrupted: Ray Tune run ended ({self._fit_error})"))


def make_ray_executor(runner: Runner, spec: Any, workdir: str | Path | None = None, **kwargs: Any) -> RayExecutor:
    """The `ray` entry of explorer.backends.registry.BACKENDS: settings from the study spec."""
    res = spec.resources
    return RayExecutor(runner, res.max_concurrent_trials, nproc=res.nproc_per_trial,
                       cpus_per_worker=res.cpus_per_worker,
                       gpus_per_worker=res.gpus_per_worker, address=getattr(spec, "ray_address", None),
                       storage_path=(Path(workdir) / "ray_results") if workdir is not None else None,
                       worker_restarts=spec.retries, experiment_name=spec.name, **kwargs)
