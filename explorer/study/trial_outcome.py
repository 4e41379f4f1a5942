"""A finished trial attempt written to the study database: its scores, intervals and fidelity as
user attrs, its bootstrap replicates and per-item scores as system attrs, then its state."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from explorer.study.attrs import score_attrs
from explorer.backends.base import TrialOutcome
from explorer.study.stats import BOOTSTRAP_ATTR, STAT_ATTRS, bootstrap_record
from explorer.strategies import fidelity as F
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)


def record_statistics(storage, trial_id: int, result: dict[str, Any] | None) -> None:
    """Intervals and blind scores as user attrs (status, reports); the objective's bootstrap
    replicates as a system attr, for paired comparisons (explorer/study/stats.py)."""
    for key in STAT_ATTRS:
        if (result or {}).get(key) is not None:
            storage.set_trial_user_attr(trial_id, key, result[key])
    record = bootstrap_record(result)
    if record is not None:
        storage.set_trial_system_attr(trial_id, BOOTSTRAP_ATTR, record)


def record_outcome(study, storage, trial: optuna.Trial, trial_id: int, outcome: TrialOutcome, *,
                   trial_dir: Path, grace_period_s: float) -> bool:
    """Tell the study how the attempt ended; True when it completed."""
    try:
        trial.set_user_attr("duration_s", round(outcome.duration_s, 3))
        if outcome.result and isinstance(outcome.result.get("scores"), dict):
            for key, score in score_attrs(outcome.result["scores"]).items():
                trial.set_user_attr(key, score)
        record_statistics(storage, trial_id, outcome.result)
        if outcome.result and isinstance(outcome.result.get("fidelity"), dict):
            trial.set_user_attr(F.FIDELITY_ATTR, outcome.result["fidelity"])
            if outcome.result.get("item_scores"):  # a later candidate's early-stop reference
                storage.set_trial_system_attr(trial_id, F.ITEM_SCORES_ATTR, outcome.result["item_scores"])
        if outcome.state == "complete":
            study.tell(trial, outcome.value)
        elif outcome.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif outcome.state == "preempted":  # checkpointed: the next attempt continues, no retry spent
            trial.set_user_attr("preempted", True)
            study.tell(trial, state=TrialState.FAIL)
        else:
            trial.set_user_attr("error", (outcome.error or "unknown error")[:4000])
            if outcome.restarts:
                trial.set_user_attr("restarts", outcome.restarts)
            trial.set_user_attr("log", str(trial_dir / TD.LOGS))
            study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        # our heartbeat lapsed past the grace period and another controller failed the trial
        # as stale (it is being re-run): keep the database's verdict
        logger.warning("trial %d was failed as stale while it ran (heartbeat late by more than "
                       "grace_period_s=%d); its %s result is dropped", trial.number, grace_period_s, outcome.state)
        return False
    logger.info("trial %d: %s %s", trial.number, outcome.state, outcome.value if outcome.value is not None else "")
    return outcome.state == "complete"
