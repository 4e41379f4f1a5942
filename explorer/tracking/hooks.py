"""What the controller tells a tracker (MlflowTracker implements it; tests pass their own)."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial


class Tracker(Protocol):
    def on_study_start(self, study: optuna.Study) -> str | None:
        """Once per controller start (a resumed study included); returns the study's run id."""

    def on_trial_start(self, study: optuna.Study, number: int, trial_dir: str | Path | None = None) -> str | None:
        """A trial attempt starts running; returns its run id."""

    def on_trial_end(self, study: optuna.Study, frozen_trial: FrozenTrial,
                     trial_dir: str | Path | None = None) -> str | None:
        """A trial attempt is recorded in the study database (complete, pruned, failed, requeued)."""

    def on_study_end(self, study: optuna.Study, status: str = "FINISHED") -> None:
        """The study is done (or stopped): the report is final."""
