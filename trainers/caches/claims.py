"""Exclusive claims that work on shared filesystems (NFS, Lustre), where flock is not cluster-wide:
a lock file created with O_EXCL (atomic there too) holding its owner, kept fresh by a heartbeat
(its mtime). A claim whose heartbeat stopped for `stale_s`, or whose owner on this host is dead,
is broken by renaming it aside: of several breakers only one rename succeeds."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileClaim:
    """`claim = FileClaim(path).acquire()` -> the claim, or None while someone else holds it."""

    def __init__(self, path: str | Path, beat_s: float = 15.0, stale_s: float = 120.0) -> None:
        self.path, self.beat_s, self.stale_s = Path(path), beat_s, stale_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # gone, or being written by its creator this instant

    def _stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        owner = self.owner()
        if owner and owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", 0))):
            return True  # its process is gone: no need to wait for the heartbeat to age
        return age > self.stale_s

    def _break(self) -> None:
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            self.path.rename(aside)
        except FileNotFoundError:
            return  # another breaker (or the owner) was first
        logger.warning("claim %s: previous holder %s stopped its heartbeat; taken over", self.path, self.owner())
        aside.unlink(missing_ok=True)

    def acquire(self) -> "FileClaim | None":
        if self._stale():
            self._break()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"claim-{self.path.name}")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                logger.error("claim %s vanished while held", self.path)
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)
