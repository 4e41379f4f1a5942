"""Live progress of a running study (rich): round, trials done/running/failed, best so far (on the
objective's scale, e.g. the paper's 1000-point Avg), a statistical tie of the latest round's
leaders, elapsed time and an estimate of the time left.

The display reads the study database itself (at most once a second), so it shows the truth
whatever runs the trials: this controller, another worker, or a resumed study. The controller may
also push facts it knows better (`update(round=..., total=...)`).
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What the display shows; computed from the study's trials."""

    round: int | None = None
    total: int | None = None
    complete: int = 0
    running: int = 0
    failed: int = 0
    pruned: int = 0
    waiting: int = 0
    best_value: float | None = None
    best_label: str = ""
    tie: str | None = None  # the latest decided round's statistically tied leaders, in words
    elapsed_s: float = 0.0
    eta_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.complete + self.pruned


def snapshot(study, started: float, total: int | None = None, *, concurrency: int = 1,
             round_hint: int | None = None, now: float | None = None) -> Snapshot:
    """Counts, best and ETA of `study` now. ETA = planned trials left x mean trial time / concurrency."""
    from explorer.study.attrs import expert_letters
    now = time.time() if now is None else now
    snap = Snapshot(total=total, elapsed_s=now - started, round=round_hint)
    durations = []
    maximize = study.direction.name == "MAXIMIZE"
    best = None
    for t in study.get_trials(deepcopy=False):
        name = t.state.name
        if name == "COMPLETE":
            snap.complete += 1
            if t.value is not None and (best is None or (t.value > best.value if maximize else t.value < best.value)):
                best = t
        elif name == "RUNNING":
            snap.running += 1
        elif name == "FAIL":
            snap.failed += 1
        elif name == "PRUNED":
            snap.pruned += 1
        elif name == "WAITING":
            snap.waiting += 1
        if name in ("COMPLETE", "PRUNED") and t.duration is not None:
            durations.append(t.duration.total_seconds())
        rnd = t.user_attrs.get("round")
        if rnd is not None and name in ("RUNNING", "WAITING", "COMPLETE") and round_hint is None:
            snap.round = max(snap.round if snap.round is not None else -1, int(rnd))
    if best is not None:
        snap.best_value = best.value
        snap.best_label = f"{expert_letters(best.params, best.user_attrs)} (#{best.number})"
    if total is not None and durations:
        left = max(total - snap.done, 0)
        snap.eta_s = left * statistics.fmean(durations) / max(concurrency, 1)
    return snap


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render_line(snap: Snapshot) -> str:
    """One plain line (also used for the log when the terminal is not interactive)."""
    total = f"/{snap.total}" if snap.total is not None else ""
    best = f"{snap.best_value:.1f} {snap.best_label}" if snap.best_value is not None else "-"
    rnd = f"round {snap.round}  " if snap.round is not None else ""
    tie = f"  TIE {snap.tie}" if snap.tie else ""
    return (f"{rnd}done {snap.done}{total}  running {snap.running}  failed {snap.failed}  pruned {snap.pruned}  "
            f"best {best}{tie}  elapsed {_clock(snap.elapsed_s)}  eta {_clock(snap.eta_s)}")


class StudyProgress:
    """A rich Live panel over a study; use as a context manager around the study run."""

    def __init__(self, study=None, total: int | None = None, *, concurrency: int = 1, console=None,
                 title: str | None = None, min_interval_s: float = 1.0):
        self.study = study
        self.total = total
        self.concurrency = concurrency
        self.title = title
        self.min_interval_s = min_interval_s
        self._console = console
        self._started = time.time()
        self._info: dict[str, Any] = {}
        self._snap: Snapshot | None = None
        self._snap_at = 0.0
        self._lock = threading.Lock()
        self._live = None
        self._last_line = ""

    def update(self, info: dict[str, Any] | None = None, **kw: Any) -> None:
        """Facts from the controller: round, done, running, failed, best_value, best_experts,
        elapsed_s, eta_s (its dict, or keywords); they win over what the database poll shows."""
        with self._lock:
            self._info.update(info or {})
            self._info.update(kw)
            if kw.get("total") is not None:
                self.total = kw["total"]
            done = self._info.get("done")
            if done is not None and self._snap is not None and done != self._snap.done:
                self._snap_at = 0.0  # a trial ended since the last read: re-read, so counts agree
        if self._live is None:
            self._log_if_changed()

    def __call__(self, info: dict[str, Any] | None = None, **kw: Any) -> None:
        self.update(info, **kw)

    def current(self) -> Snapshot:
        with self._lock:
            now = time.time()
            info = dict(self._info)
            if self.study is not None and (self._snap is None or now - self._snap_at >= self.min_interval_s):
                try:
                    self._snap = snapshot(self.study, self._started, self.total, concurrency=self.concurrency, now=now)
                    self._snap_at = now
                except Exception as err:  # noqa: BLE001 -- a busy database must not kill the display
                    logger.debug("progress read failed: %s", err)
            snap = Snapshot(**vars(self._snap)) if self._snap is not None else Snapshot(total=self.total)
        snap.elapsed_s = now - self._started
        if info.get("round") is not None:
            snap.round = info["round"]
        for key in ("running", "failed"):
            if info.get(key) is not None:
                setattr(snap, key, int(info[key]))
        if info.get("best_value") is not None:
            snap.best_value = info["best_value"]
            snap.best_label = str(info.get("best_experts") or "")
        if info.get("eta_s") is not None:
            snap.eta_s = info["eta_s"]
        if "tie" in info:
            snap.tie = info["tie"]
        return snap

    def renderable(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        snap = self.current()
        head = Text(self.title or (self.study.study_name if self.study is not None else "study"), style="bold cyan")
        parts = [head, Text(render_line(snap))]
        if snap.total:
            parts.insert(1, ProgressBar(total=snap.total, completed=min(snap.done, snap.total), width=40))
        return Group(*parts)

    def _log_if_changed(self) -> None:
        line = render_line(self.current())
        core = line.split("  elapsed")[0]
        if core != self._last_line:
            self._last_line = core
            logger.info("%s", line)

    def __enter__(self) -> "StudyProgress":
        from rich.console import Console
        from rich.live import Live

        console = self._console or Console(stderr=True)
        self._started = time.time()
        if console.is_terminal:
            self._live = Live(console=console, get_renderable=self.renderable, refresh_per_second=2,
                              transient=False, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        else:
            self._snap_at = 0.0
            self._log_if_changed()
