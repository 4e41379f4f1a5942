"""A trial's processes: the process groups below a launcher (torchrun starts its own session, so
killing one group would leave the ranks running) and a launcher that dies with its controller. Linux /proc."""
from __future__ import annotations

import os
import signal
import time


def process_groups(root: int) -> set[int]:
    """Process groups of `root` and all its descendants (torchrun starts its own session, so
    killing the launcher's group alone would leave the ranks running). Linux /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(entry))
    groups, todo = set(), [root]
    while todo:
        pid = todo.pop()
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
        todo.extend(children.get(pid, []))
    return groups


def kill_groups(groups: set[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def watch_parent(parent: int) -> None:
    """Run in a thread: if the parent (the study's controller) dies, take the trial's processes (all groups below us) down with it."""
    while True:
        if os.getppid() != parent:
            groups = process_groups(os.getpid())
            groups.discard(os.getpgid(0))
            kill_groups(groups, signal.SIGKILL)
            os.killpg(0, signal.SIGKILL)
        time.sleep(1.0)
