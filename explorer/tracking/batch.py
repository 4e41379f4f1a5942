"""MLflow entities and batched logging, within the REST API's log_batch limits."""
from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from explorer.tracking import run_fields as rf
# log_batch limits of the MLflow REST API (the SQL store accepts the same).
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MAX_PARAM_LEN = 6000


def chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def step_metrics(rows: list[dict], objective: str, final_from_result: bool) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, stamp or now, step) for k, v, stamp, step in rf.step_metrics(rows, objective, final_from_result)]


def metrics(values: dict[str, float], step: int = 0) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if rf.is_number(v)]


def params(values: dict[str, Any], existing: dict[str, str]) -> list:
    from mlflow.entities import Param

    # params are immutable in MLflow; a resume logs only new ones
    return [Param(k[:250], str(v)[:MAX_PARAM_LEN]) for k, v in values.items() if k not in existing]


def tags(values: dict[str, Any]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in values.items()]


def log(client, run_id: str, params: list, metrics: list, tags: list) -> None:
    for chunk in chunks(params, MAX_PARAMS):
        client.log_batch(run_id, params=chunk)
    for chunk in chunks(tags, MAX_TAGS):
        client.log_batch(run_id, tags=chunk)
    for chunk in chunks(metrics, MAX_METRICS):
        client.log_batch(run_id, metrics=chunk)


def log_trial_files(client, run_id: str, trial_dir: Path) -> None:
    for path, folder in rf.artifact_files(trial_dir):
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=folder)
        else:
            client.log_artifact(run_id, str(path), artifact_path=folder)
