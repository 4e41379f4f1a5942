"""Pre-emption: SIGTERM or SIGUSR1 (what SLURM, Kubernetes and spot instances send), or a request
file in the trial directory, makes every rank finish its optimizer step, write a checkpoint and
exit with PREEMPT_EXIT. The launcher turns that into TrialPreempted, which a study requeues
without spending a retry."""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any
from trainers import trial_dir as TD

PREEMPT_EXIT = 75  # EX_TEMPFAIL: try again later

_signalled = False


class Preempted(Exception):
    """Raised by the training loop once the checkpoint of `step` in stage `tag` is saved."""

    def __init__(self, tag: str, step: int) -> None:
        super().__init__(f"pre-empted in stage {tag} after step {step} (checkpoint saved)")
        self.tag, self.step = tag, step


def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001 -- signal handler signature
    global _signalled
    _signalled = True


def install_handlers() -> None:
    """In a worker: the signals only set a flag; the loop acts on it at the end of a step. Where
    the loop runs off the main thread (a Ray Train worker), only the request file stops it."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, _on_signal)


def requested(out_dir: Path | None) -> bool:
    return _signalled or (out_dir is not None and (out_dir / TD.PREEMPT_REQUEST).exists())


def request(out_dir: Path) -> None:
    """Ask a running trial (all its ranks) to checkpoint and stop."""
    (out_dir / TD.PREEMPT_REQUEST).write_text("stop\n")


def write_mark(out_dir: Path, err: Preempted) -> None:
    (out_dir / TD.PREEMPT_MARK).write_text(json.dumps({"stage": err.tag, "step": err.step}))


def clear(out_dir: Path) -> None:
    """Before an attempt starts: an old request or mark belongs to the previous attempt."""
    for name in (TD.PREEMPT_REQUEST, TD.PREEMPT_MARK):
        (out_dir / name).unlink(missing_ok=True)
