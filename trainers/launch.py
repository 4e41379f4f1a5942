"""Launch one trial: validate the spec fully, write trial.yaml, generate synthetic data once, then
torchrun the workers with their own rendezvous (one DDP process: the worker alone).
`python -m trainers.launch TRIAL.yaml --out DIR --nproc N`."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainers.nodes import Nodes, from_slurm, names_nodes
from trainers.training import preempt
from trainers.spec import SpecError, TrialSpec, changed_fields, dump_trial_spec, load_trial_spec
from trainers.preflight import check_trial
from trainers.training.logging_utils import find_error
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
_RANK_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")
PREPARE_WAIT_S = 4 * 3600  # node 0 may pre-train skilled experts before the ranks start


class TrialFailed(RuntimeError):
    """The worker processes exited non-zero; the message carries the log tail."""


class TrialPreempted(TrialFailed):
    """Every rank checkpointed and stopped on request (a signal or the request file): run it again."""




def spec_state(spec: TrialSpec) -> dict[str, Any]:
    """What a trial directory's progress depends on: the resolved spec less its name (attempts of
    one planned trial differ in name only) and train.feature_cache (the same stage 2 either way,
    so a directory from before the setting, or one resumed with the cache toggled, continues)."""
    from trainers.skills.train import skill_keys

    data = spec.model_dump(mode="json")
    data.pop("name", None)
    data["train"].pop("feature_cache", None)
    for entry in data.get("experts", []):  # random init (the default) hashes as before the setting
        if isinstance(entry, dict) and entry.get("skill") is False:
            entry.pop("skill")
    if skills := skill_keys(spec):  # skilled init: the weights' key, so a new skill recipe is a new spec
        data["skills"] = skills
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return {"hash": digest, "spec": data}


def supersede(out: Path) -> Path:
    """A clean restart: the previous progress moves aside (nothing is deleted that a reader on
    another node may hold open); logs stay."""
    aside = out / TD.SUPERSEDED / time.strftime("%Y%m%dT%H%M%S")
    aside.mkdir(parents=True, exist_ok=True)
    for name in (TD.STAGES, TD.CHECKPOINTS, TD.PREDICTIONS, TD.METRICS, TD.RESULT, TD.SPEC_STATE, TD.ATTEMPTS):
        if (out / name).exists():
            (out / name).rename(aside / name)
    return aside


def check_trial_dir(spec: TrialSpec, out: Path, restart: bool) -> None:
    """A directory continues only the spec it was started with; another one is an error naming
    both hashes and the changed fields, or with `restart`, a clean restart."""
    state, path = spec_state(spec), out / TD.SPEC_STATE
    progress = any((out / name).exists() for name in (TD.STAGES, TD.CHECKPOINTS, TD.METRICS))
    if path.is_file() and progress:
        old = json.loads(path.read_text())
        if old.get("hash") != state["hash"]:
            if not restart:
                changed = changed_fields(old.get("spec", {}), state["spec"])
                raise SpecError(f"{out}: holds progress of spec {old.get('hash')}, this spec is {state['hash']} "
                                f"(changed: {', '.join(changed[:4])}); pass --restart for a clean restart")
            logger.warning("%s: spec changed, previous progress moved to %s", out, supersede(out))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def _record_attempt(out: Path, entry: dict[str, Any], new: bool) -> list[dict[str, Any]]:
    path = out / TD.ATTEMPTS
    attempts = json.loads(path.read_text()) if path.is_file() else []
    if new or not attempts:
        attempts.append(entry)
    else:
        attempts[-1].update(entry)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(attempts, indent=1))
    tmp.replace(path)
    return attempts


def _stop_on_signal(out: Path) -> None:
    """SIGTERM/SIGUSR1 to the launcher: ask every rank to checkpoint and stop (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda *_: preempt.request(out))


def default_cache_dir(spec: TrialSpec, out_dir: Path) -> Path:
    return Path(spec.cache_dir).expanduser() if spec.cache_dir else out_dir.resolve().parent / "cache"


def _nnodes(torchrun_args: Sequence[str]) -> int:
    args = list(torchrun_args)
    for i, a in enumerate(args):
        val = a.split("=", 1)[1] if a.startswith(("--nnodes=", "--nnodes=")) else (
            args[i + 1] if a == "--nnodes" and i + 1 < len(args) else None)
        if val is not None:
            return int(str(val).split(":")[-1])
    return 1


def torchrun_command(spec_path: Path, out_dir: Path, cache_dir: Path, nproc: int,
                     *, torchrun_args: Sequence[str] = (), worker_args: Sequence[str] = ()) -> list[str]:
    """Each job gets its own rendezvous (c10d on a free port) unless multi-node args override it."""
    args = list(torchrun_args)
    rdzv = [] if names_nodes(args) else [
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *rdzv, *args,
            "-m", "trainers.stages.runner", "--spec", str(spec_path), "--out", str(out_dir),
            "--cache-dir", str(cache_dir), *worker_args]


def worker_command(spec: TrialSpec, spec_path: Path, out_dir: Path, cache_dir: Path, nproc: int,
                   *, torchrun_args: Sequence[str] = (), worker_args: Sequence[str] = ()) -> list[str]:
    """One DDP process on one node runs the worker directly: world size 1 makes no process group
    and no DDP wrapper either way, so the numbers are torchrun's, without its agent's start and
    stop (seconds a trial). DeepSpeed, several processes or nodes: torchrun_command."""
    if nproc == 1 and not torchrun_args and spec.train.strategy == "ddp":
        return [sys.executable, "-m", "trainers.stages.runner", "--spec", str(spec_path), "--out", str(out_dir),
                "--cache-dir", str(cache_dir), *worker_args]
    return torchrun_command(spec_path, out_dir, cache_dir, nproc, torchrun_args=torchrun_args,
                            worker_args=worker_args)


def prepare_trial(spec_path: str | Path, out_dir: str | Path, nproc: int = 1,
                  torchrun_args: Sequence[str] = (), restart: bool = False) -> tuple[TrialSpec, Path, Path]:
    """Validate, check the directory's progress is of this spec, write trial.yaml (resolved),
    generate synthetic data. Returns (spec, trial.yaml, cache)."""

    spec = load_trial_spec(spec_path)
    check_trial(spec, str(spec_path), nproc, _nnodes(torchrun_args))
    out = Path(out_dir)
    (out / TD.LOGS).mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir(spec, out)
    resolved = spec.model_copy(update={"cache_dir": str(cache.resolve())})
    check_trial_dir(resolved, out, restart)
    if spec.data.synthetic is not None:
        from trainers.data.synthetic import ensure_synthetic

        ensure_synthetic(spec.data.synthetic, cache)  # once, here, before any worker starts
    if any(e.skill for e in spec.experts):
        from trainers.stages.recipes import resolve_experts

        resolve_experts(spec, cache)  # skilled init trained (or found) here, before any worker starts
    _verify_images(resolved, str(spec_path), cache, out)
    trial_yaml = out / TD.TRIAL_SPEC
    dump_trial_spec(resolved, trial_yaml)
    return resolved, trial_yaml, cache


def _verify_images(spec: TrialSpec, source: str, cache: Path, out: Path) -> None:
    """Every dataset's images opened once here (remembered in the cache), not by each rank and stage."""
    from trainers.data.errors import DataError
    from trainers.data.verify import write_checks
    from trainers.stages.recipes import resolve_data

    data = resolve_data(spec, cache)
    try:
        write_checks([data.pretrain, data.sft, data.heldout], data.image_folder, cache, out, spec.data.on_bad_image)
    except DataError as err:
        raise SpecError(f"{source}: data: {err}") from None


def run_trial(spec_path: str | Path, out_dir: str | Path, nproc: int = 1, *, torchrun_args: Sequence[str] = (),
              worker_args: Sequence[str] = (), timeout_s: float | None = None,
              extra_torchrun_args: Sequence[str] = (), restart: bool = False,
              nodes: Nodes | None = None) -> dict[str, Any] | None:
    """Run a whole trial, continuing the directory's last checkpoints; returns result.json's content.
    SpecError before launch, TrialPreempted or TrialFailed after. `extra_torchrun_args` is the
    DEVELOPERS.md name of `torchrun_args` (both are passed through). Several nodes: `nodes`, or
    SLURM's (trainers/nodes.py) when torchrun_args do not name them; node k > 0 returns None."""
    torchrun_args = [*torchrun_args, *extra_torchrun_args]
    if nodes is None and not names_nodes(torchrun_args):
        nodes = from_slurm()
    if nodes is not None:
        torchrun_args = [*torchrun_args, *nodes.torchrun_args()]
        if nodes.rank > 0:
            return _follow_node0(spec_path, Path(out_dir), nproc, nodes, torchrun_args, worker_args, timeout_s)
    spec, trial_yaml, cache = prepare_trial(spec_path, out_dir, nproc, torchrun_args, restart)
    out = Path(out_dir)
    preempt.clear(out)
    _record_attempt(out, {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "exit": None,
                          "resumed_from": {}}, new=True)
    if nodes is not None:  # the other nodes start their ranks once this is written
        (out / TD.LOGS / TD.PREPARED).write_text(json.dumps({"run_id": nodes.run_id}))
    _stop_on_signal(out)
    cmd = worker_command(spec, trial_yaml, out, cache, nproc, torchrun_args=torchrun_args, worker_args=worker_args)
    rc, log, start = _torchrun(cmd, out / TD.LOGS / TD.TORCHRUN_LOG, timeout_s)
    mark = out / TD.PREEMPT_MARK
    if rc != 0 and mark.is_file():
        where = json.loads(mark.read_text())
        _record_attempt(out, {"exit": "preempted", "stopped_at": where}, new=False)
        raise TrialPreempted(f"trial {spec.name} pre-empted in stage {where['stage']} after step {where['step']} "
                             "(checkpoint saved: run it again to continue)")
    if rc != 0:
        _record_attempt(out, {"exit": rc}, new=False)
        raise _failure(spec.name, rc, log, start)
    result_path = out / TD.RESULT
    if not result_path.is_file():
        raise TrialFailed(f"trial {spec.name}: workers exited 0 but wrote no {result_path}")
    result = json.loads(result_path.read_text())
    result["attempts"] = _record_attempt(out, {"exit": 0, "resumed_from": result.get("resumed_from", {})}, new=False)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(result_path)
    return result


def _torchrun(cmd: list[str], log: Path, timeout_s: float | None) -> tuple[int, Path, int]:
    """Runs torchrun in its own process group, appending to `log`: (exit code, log, this attempt's offset)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    if "torch.distributed.run" not in cmd:  # the lone worker: no group from a caller's torchrun variables
        for name in _RANK_ENV:
            env.pop(name, None)
    logger.info("%s", " ".join(cmd))
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        start = fh.tell()  # the log keeps every attempt: this attempt's error is read from here
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = -9
    return rc, log, start


def _failure(name: str, rc: int, log: Path, start: int) -> TrialFailed:
    with log.open("rb") as fh:
        fh.seek(start)
        lines = fh.read().decode(errors="replace").splitlines()
    found = find_error(lines)
    first = f"{found[0]}: {found[1]}"[:500] if found else "no Python error in the log"
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return TrialFailed(f"trial {name} failed (exit {rc}): {first}; log {log}; tail:\n{tail}")


def _follow_node0(spec_path: str | Path, out: Path, nproc: int, nodes: Nodes, torchrun_args: list[str],
                  worker_args: Sequence[str], timeout_s: float | None) -> None:
    """Node k > 0: waits until node 0 has prepared this launch (validated, written trial.yaml, made
    the data), then starts its own ranks; node 0 records the attempt and the result."""
    marker, deadline = out / TD.LOGS / TD.PREPARED, time.monotonic() + (timeout_s or PREPARE_WAIT_S)
    while not (marker.is_file() and json.loads(marker.read_text() or "{}").get("run_id") == nodes.run_id):
        if time.monotonic() > deadline:
            raise TrialFailed(f"node {nodes.rank}: node 0 did not prepare {out} for {nodes.run_id} in time")
        time.sleep(1.0)
    spec = load_trial_spec(out / TD.TRIAL_SPEC)
    cache = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir(spec, out)
    _stop_on_signal(out)
    cmd = torchrun_command(out / TD.TRIAL_SPEC, out, cache, nproc, torchrun_args=torchrun_args,
                           worker_args=worker_args)
    rc, log, start = _torchrun(cmd, out / TD.LOGS / f"torchrun.node{nodes.rank}.log", timeout_s)
    if rc != 0 and (out / TD.PREEMPT_MARK).is_file():
        raise TrialPreempted(f"trial {spec.name}: node {nodes.rank} stopped after the checkpoint")
    if rc != 0:
        raise _failure(f"{spec.name} (node {nodes.rank})", rc, log, start)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainers.launch", description="run one Eagle trial")
    ap.add_argument("spec")
    ap.add_argument("--out", required=True)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--restart", action="store_true", help="start over if the directory holds another spec's progress")
    ap.add_argument("--die-with-parent", action="store_true", help="stop the trial's processes when the parent dies")
    args, torchrun_args = ap.parse_known_args(argv)
    if args.die_with_parent:
        import threading

        from trainers.training.processes import watch_parent

        threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    from trainers.training.logging_utils import setup_logging

    setup_logging()
    try:
        result = run_trial(args.spec, args.out, args.nproc, torchrun_args=torchrun_args, restart=args.restart)
    except SpecError as err:
        logger.error("%s", err)
        return 2
    except TrialPreempted as err:
        logger.warning("%s", err)
        return preempt.PREEMPT_EXIT
    except TrialFailed as err:
        logger.error("%s", err)
        return 1
    if result is not None:  # node k > 0 of a multi-node trial has none: node 0 reports it
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
