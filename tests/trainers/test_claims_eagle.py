"""NFS-safe claims: O_EXCL lock files with an owner and a heartbeat; stale ones are broken once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from trainers.caches.claims import FileClaim


def test_one_holder_at_a_time_and_release_frees_it(tmp_path):
    first = FileClaim(tmp_path / "k.lock").acquire()
    assert first is not None and FileClaim(tmp_path / "k.lock").acquire() is None
    assert first.owner()["pid"] == os.getpid()
    first.release()
    second = FileClaim(tmp_path / "k.lock").acquire()
    assert second is not None
    second.release()
    assert not (tmp_path / "k.lock").exists()


def test_the_heartbeat_keeps_a_live_claim_from_going_stale(tmp_path):
    held = FileClaim(tmp_path / "k.lock", beat_s=0.05, stale_s=0.3).acquire()
    time.sleep(0.8)  # well past stale_s: only the heartbeat keeps it
    assert FileClaim(tmp_path / "k.lock", stale_s=0.3).acquire() is None
    held.release()


def test_a_claim_whose_heartbeat_stopped_elsewhere_is_taken_over(tmp_path):
    lock = tmp_path / "k.lock"
    lock.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0}))
    old = time.time() - 10
    os.utime(lock, (old, old))
    assert FileClaim(lock, stale_s=60).acquire() is None  # 10 s silent: still within stale_s
    taken = FileClaim(lock, stale_s=5).acquire()
    assert taken is not None and taken.owner()["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["k.lock"]  # the stale one moved aside and removed
    taken.release()


def test_a_dead_owner_on_this_host_is_taken_over_at_once(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "k.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": time.time()}))
    taken = FileClaim(lock, stale_s=3600).acquire()
    assert taken is not None
    taken.release()
