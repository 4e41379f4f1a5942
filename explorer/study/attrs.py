"""What optuna-dashboard (and anyone reading the study database) sees of a trial: the objective's
name, a readable label, one user attr per benchmark score, and the link to the trial's MLflow run.

The label is also the MLflow run name, so a trial reads the same in both UIs."""
from __future__ import annotations

import math
import warnings
from typing import Any

import optuna

LABEL_ATTR = "label"
RUN_URL_ATTR = "mlflow_run_url"
# the study's and each trial's MLflow ids, kept in the study database
STUDY_RUN_ATTR = "mlflow_parent_run_id"
STUDY_EXPERIMENT_ATTR = "mlflow_experiment_id"
TRIAL_RUN_ATTR = "mlflow_run_id"
SCORE_PREFIX = "score/"  # per-benchmark user attrs, and the MLflow metric prefix of the same scores
_LEGACY_SCORES = "scores"  # one dict attr, as studies written before the per-benchmark attrs have it


def name_metrics(study: optuna.Study, objective: str) -> None:
    """The study's value is called after the objective ("avg"), not "Objective 0"."""
    if study.metric_names == [objective]:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([objective])


def expert_letters(params: dict[str, Any], user_attrs: dict[str, Any]) -> str:
    """The expert set as the paper writes it ("A+B+F"): the trial's own order if it recorded one."""
    if user_attrs.get("experts"):
        return str(user_attrs["experts"])
    letters = [k.split("_", 1)[1] for k, v in sorted(params.items()) if k.startswith("expert_") and v]
    return "+".join(letters)


def trial_label(experts: str, user_attrs: dict[str, Any], number: int) -> str:
    """"A+B+F+E · r2 · #7": the mixture first (what people compare), then the greedy round, or the
    grid point / sampler slot for studies without rounds, then the trial number."""
    parts = [experts or "?"]
    rnd, cand = user_attrs.get("round"), user_attrs.get("candidate")
    if rnd is not None and (int(rnd) > 0 or cand == "base"):
        parts.append(f"r{rnd}")
    elif cand:
        parts.append(str(cand))
    parts.append(f"#{number}")
    return " · ".join(parts)


def score_attrs(scores: dict[str, Any]) -> dict[str, float]:
    """{"score/gqa": 64.0, ...}: one short, sortable attr per benchmark (and sub-figure)."""
    return {f"{SCORE_PREFIX}{k}": float(v) for k, v in scores.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def trial_scores(user_attrs: dict[str, Any]) -> dict[str, float]:
    """The per-benchmark scores a trial's user attrs hold (either layout), {} when none."""
    if isinstance(user_attrs.get(_LEGACY_SCORES), dict):
        return dict(user_attrs[_LEGACY_SCORES])
    return {k[len(SCORE_PREFIX):]: v for k, v in user_attrs.items() if k.startswith(SCORE_PREFIX)}
