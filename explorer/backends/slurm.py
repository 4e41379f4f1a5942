"""The SLURM backend (`backend: slurm`): every trial attempt is one SLURM job, submitted through
submitit with the study's `resources.slurm`. The job runs the study's runner on the allocation (a
real trial: `python -m explorer.backends.local` -> torchrun); the controller, on a login node or in a
small job, waits for it, streams the trial's eval lines from the shared trial directory for
pruning, and cancels a pruned job.

Time limits and pre-emption: jobs are submitted with `--no-requeue` and `--signal=TERM@delay`, so
SLURM's SIGTERM (ahead of the time limit, or on pre-emption) makes every rank checkpoint and stop;
the job reports "pre-empted" and the controller requeues a new attempt, a new job, that continues
from that checkpoint in the same trial directory (no retry is spent). Several nodes: one task per
node, each a torchrun of `nproc_per_trial` ranks; node ranks and the rendezvous on the first node
come from SLURM's variables (trainers/nodes.py)."""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import optuna

from explorer.backends.base import Executor, Runner, RunnerError, TrialJob, TrialOutcome, TrialPreemptedError, run_job
from explorer.backends.local import LocalRunner
from explorer.study.spec import SlurmOptions, StudySpec
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)


def _no_report(step: int, value: float) -> bool:  # noqa: ARG001 -- the job cannot reach the study
    return False


def sbatch_parameters(opts: SlurmOptions, name: str) -> dict[str, Any]:
    """submitit.SlurmExecutor parameters for one trial job."""
    params: dict[str, Any] = {"job_name": name, "time": opts.time_min, "nodes": opts.nodes, "ntasks_per_node": 1,
                              "partition": opts.partition, "account": opts.account, "qos": opts.qos,
                              "cpus_per_task": opts.cpus_per_task,
                              "gpus_per_node": opts.gpus_per_node or None,
                              "mem": f"{opts.mem_gb:g}GB" if opts.mem_gb else None}
    params = {k: v for k, v in params.items() if v is not None}
    params["additional_parameters"] = {"signal": f"TERM@{opts.signal_delay_s}", "no_requeue": True, **opts.extra}
    return params


def run_in_job(runner: Runner, job: TrialJob, nodes: int) -> dict[str, Any]:
    """What a SLURM job runs: the trial, its outcome as plain data (exceptions do not pickle well)."""
    from trainers.launch import TrialPreempted

    try:
        if nodes > 1:
            result = _multi_node_trial(job, nodes)
        else:
            result = runner(job)
    except (TrialPreempted, TrialPreemptedError) as err:
        return {"preempted": str(err)}
    except Exception as err:  # noqa: BLE001 -- reported to the controller as the trial's error
        return {"error": f"{type(err).__name__}: {err}"}
    return {"result": result}


def _multi_node_trial(job: TrialJob, nodes: int) -> dict[str, Any] | None:
    """One task per node: node rank, count and rendezvous from SLURM's variables (trainers/nodes.py);
    task 0's result is the job's."""
    from trainers.launch import run_trial
    from trainers.nodes import from_slurm

    found = from_slurm()
    if found is None or found.count != nodes:
        raise RunnerError(f"a {nodes}-node trial job runs {found.count if found else 1} SLURM task(s); "
                          "it needs one task per node")
    return run_trial(job.spec_path, job.trial_dir, job.nproc, restart=job.restart, nodes=found)


def _live(ids: list[str]) -> list[str]:
    """Those of `ids` that SLURM still lists (pending, running or completing)."""
    import getpass

    out = subprocess.run(["squeue", "-h", "-o", "%i", "-u", getpass.getuser()], check=False, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RunnerError(f"squeue failed: {out.stderr.strip()[:200]}")
    listed = set(out.stdout.split())
    return [i for i in ids if i in listed]


def end_earlier_jobs(jobs_log: Path, grace_s: float, poll_s: float = 1.0) -> None:
    """A controller that died (killed, a lost login node) leaves its jobs running: before a new
    attempt in the same trial directory (any rung of the planned trial), end every earlier job
    still listed, so that two never write its checkpoints. SIGTERM first (the trial checkpoints
    and stops, as before a time limit), SIGKILL to all its processes after `grace_s`."""
    ids = [line.split()[1] for line in jobs_log.read_text().splitlines() if len(line.split()) == 2] \
        if jobs_log.is_file() else []
    live = _live(ids) if ids else []
    for cancel, wait_s in ((["scancel", "--signal=TERM"], grace_s), (["scancel", "--full", "--signal=KILL"], 60.0)):
        if not live:
            return
        logger.warning("%s: earlier SLURM job(s) %s still running; ending them before the new attempt",
                       jobs_log.parent.parent.name, ", ".join(live))
        subprocess.run([*cancel, *live], check=False, capture_output=True)
        deadline = time.monotonic() + wait_s
        while live and time.monotonic() < deadline:
            time.sleep(poll_s)
            live = _live(live)
    if live:
        raise RunnerError(f"earlier SLURM job(s) {', '.join(live)} of {jobs_log.parent.parent} did not end")


class SlurmExecutor(Executor):
    def __init__(self, runner: Runner, spec: StudySpec, poll_s: float = 2.0) -> None:
        self.runner, self.opts, self.study = runner, spec.resources.slurm, spec.name
        self.max_concurrent = spec.resources.max_concurrent_trials
        self.poll_s = poll_s
        self._pool = cf.ThreadPoolExecutor(max_workers=self.max_concurrent, thread_name_prefix="slurm")
        self._jobs: dict[int, Any] = {}
        self._lock = threading.Lock()

    def submit(self, job: TrialJob) -> "cf.Future[TrialOutcome]":
        return self._pool.submit(run_job, self._run, job)

    def _run(self, job: TrialJob) -> dict[str, Any]:
        import submitit

        folder = job.trial_dir / "slurm"
        end_earlier_jobs(folder / "jobs.log", self.opts.signal_delay_s, self.poll_s)
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
        ex.update_parameters(**sbatch_parameters(self.opts, f"eagle-{self.study}-{job.number}"))
        submitted = time.time()
        sj = ex.submit(run_in_job, self.runner, dataclasses.replace(job, report=_no_report), self.opts.nodes)
        logger.info("trial %d: SLURM job %s", job.number, sj.job_id)
        with (folder / "jobs.log").open("a") as fh:  # every attempt's job, for sacct
            fh.write(f"{job.number} {sj.job_id}\n")
        with self._lock:
            self._jobs[job.number] = sj
        metrics, seen = job.trial_dir / TD.METRICS, 0
        try:
            while True:
                finished = sj.done()
                seen, stop = LocalRunner._stream(metrics, seen, job)
                if stop:
                    sj.cancel(check=False)
                    raise optuna.TrialPruned(f"trial {job.number} pruned (SLURM job {sj.job_id} cancelled)")
                if finished:
                    break
                time.sleep(self.poll_s)
            out = sj.results()[0]  # task 0 reports the trial (a multi-node job has one task per node)
        except submitit.core.utils.UncompletedJobError as err:
            mark = job.trial_dir / TD.PREEMPT_MARK
            if mark.is_file() and mark.stat().st_mtime >= submitted:  # killed after its checkpoint
                raise TrialPreemptedError(f"SLURM job {sj.job_id} ended after checkpointing") from None
            raise RunnerError(f"SLURM job {sj.job_id} did not finish: {str(err).strip().splitlines()[0]} "
                              f"(logs {folder})") from None
        finally:
            with self._lock:
                self._jobs.pop(job.number, None)
        if "preempted" in out:
            raise TrialPreemptedError(f"SLURM job {sj.job_id}: {out['preempted']}")
        if "error" in out:
            raise RunnerError(f"SLURM job {sj.job_id}: {out['error']}")
        return out["result"]

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:  # SIGTERM, as SLURM would send: the jobs checkpoint and end on their own
            with self._lock:
                ids = [sj.job_id for sj in self._jobs.values()]
            if ids:
                subprocess.run(["scancel", "--signal=TERM", *ids], check=False, capture_output=True)
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def make_slurm_executor(runner: Runner, spec: StudySpec, workdir: str | Path | None = None) -> SlurmExecutor:
    import shutil

    if shutil.which("sbatch") is None:
        raise ValueError("backend 'slurm' needs SLURM's sbatch on PATH (run the controller on a login node)")
    return SlurmExecutor(runner, spec)

