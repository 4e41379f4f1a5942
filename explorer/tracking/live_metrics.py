"""A running trial's training curves reach its MLflow run while it trains: one thread tails each
trial's metrics.jsonl (written by rank 0) and ships new training rows in batches. A tracking
outage only delays them: unsent metrics stay buffered and go out when the server answers again,
and the run's `eagle.live_rows` tag says how many rows are in, so the end-of-trial logging adds
exactly the rest (evaluation rows are logged there, with the result)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.tracking import run_fields as rf
logger = logging.getLogger(__name__)
LIVE_ROWS_TAG = "eagle.live_rows"
_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch


def _key(row: dict[str, Any]) -> tuple:
    return row.get("stage"), row.get("tag"), row.get("step")


@dataclass
class _Watched:
    run_id: str
    path: Path
    shipped: list[tuple] = field(default_factory=list)  # keys of the rows already read, in order
    pending: list = field(default_factory=list)  # metrics read but not yet accepted by the server
    pending_rows: int = 0  # the row count `pending` brings the run to
    lock: threading.Lock = field(default_factory=threading.Lock)  # the loop and finish() never both ship


class LiveMetrics:
    def __init__(self, client_fn, interval_s: float = 10.0) -> None:
        self._client_fn, self.interval_s = client_fn, interval_s
        self._watched: dict[int, _Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False

    def watch(self, number: int, run_id: str, path: Path) -> None:
        with self._lock:
            self._watched[number] = _Watched(run_id, Path(path))
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="mlflow-live")
            self._thread.start()

    def finish(self, number: int) -> None:
        """The trial ended: ship what it wrote last (one try; the end-of-trial logging and the
        study's later syncs cover the rest if the server is down now)."""
        with self._lock:
            w = self._watched.pop(number, None)
        if w is not None:
            self._ship(w)

    def close(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                watched = list(self._watched.values())
            for w in watched:
                self._ship(w)

    def _read(self, w: _Watched) -> None:
        rows = rf.read_steps(w.path)
        keys = [_key(r) for r in rows]
        common = 0  # a resumed attempt truncates the file to its checkpoint: re-read from there
        while common < min(len(keys), len(w.shipped)) and keys[common] == w.shipped[common]:
            common += 1
        new = [r for r in rows[common:] if r.get("stage") != "eval"]
        w.shipped = keys
        now = int(time.time() * 1000)
        w.pending += [_metric(k, v, stamp or now, step) for k, v, stamp, step in rf.step_metrics(new, "objective", False)]
        w.pending_rows = len(rows)

    def _ship(self, w: _Watched) -> None:

        with w.lock:
            self._ship_locked(w)

    def _ship_locked(self, w: _Watched) -> None:
        from mlflow.entities import RunTag

        try:
            self._read(w)
            client = self._client_fn()
            while w.pending:
                batch = w.pending[:_BATCH]
                last = len(batch) == len(w.pending)
                tags = [RunTag(LIVE_ROWS_TAG, str(w.pending_rows))] if last else []
                client.log_batch(w.run_id, metrics=batch, tags=tags)
                del w.pending[:len(batch)]
            if self._down:
                logger.info("MLflow is back: live metrics flushed")
                self._down = False
        except Exception as err:  # noqa: BLE001 -- an outage never stops a trial; retried next tick
            if not self._down:
                logger.warning("MLflow unreachable, live metrics buffered: %s",
                               str(err).splitlines()[0] if str(err) else type(err).__name__)
                self._down = True


def _metric(key: str, value: float, stamp: int, step: int):
    from mlflow.entities import Metric

    return Metric(key, value, stamp, step)
