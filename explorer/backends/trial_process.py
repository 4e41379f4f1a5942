"""The trial process: `python -m explorer.backends.trial_process SPEC OUT_DIR NPROC [--restart]`, started
by LocalRunner (and by the Ray and SLURM backends through it). It runs one trial with
`trainers.launch.run_trial` and dies with its controller."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from explorer.backends.local import kill_groups, process_groups
from trainers.training.preempt import PREEMPT_EXIT  # light: no torch


def _watch_parent(parent: int) -> None:
    """If the controller dies, take the trial's processes (all groups below us) down with it."""
    while True:
        if os.getppid() != parent:
            groups = process_groups(os.getpid())
            groups.discard(os.getpgid(0))
            kill_groups(groups, signal.SIGKILL)
            os.killpg(0, signal.SIGKILL)
        time.sleep(1.0)


def main(argv: list[str]) -> int:
    restart = "--restart" in argv
    argv = [a for a in argv if a != "--restart"]
    if len(argv) != 3:
        sys.stderr.write("usage: python -m explorer.backends.trial_process SPEC OUT_DIR NPROC [--restart]\n")
        return 2
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    from trainers.launch import TrialPreempted, run_trial  # only the trial process needs trainers

    try:
        run_trial(argv[0], argv[1], int(argv[2]), restart=restart)
    except TrialPreempted as err:
        logging.getLogger(__name__).warning("%s", err)
        return PREEMPT_EXIT
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
