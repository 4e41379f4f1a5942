"""What a finished trial's MLflow run holds, read from its directory (trial.yaml, result.json,
metrics.jsonl) and its study record."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from explorer.tracking import run_fields as rf
from explorer.study.stats import interval_metrics
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)


def read_file(path: Path, parse=json.loads) -> Any:
    """A trial file's content (trial.yaml), None when missing or unreadable (logged: a half-written trial)."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, yaml.YAMLError) as err:
        logger.warning("cannot read %s: %s", path, err)
        return None


@dataclass
class TrialRecord:
    params: dict[str, Any]
    values: dict[str, float]  # final metrics, logged at the final evaluation's step
    rows: list[dict]  # metrics.jsonl
    objective: str
    final_from_result: bool  # result.json has the scores: the last eval row is not the final one


def run_record(frozen_trial, trial_dir: Path | None, experts: str, default_objective: str) -> TrialRecord:
    ua = frozen_trial.user_attrs
    spec = read_file(trial_dir / TD.TRIAL_SPEC, yaml.safe_load) if trial_dir else None
    result = TD.read_result(trial_dir)
    objective = rf.objective_of(result, default_objective)
    params = rf.setting_params(frozen_trial.params, ua)
    if isinstance(spec, dict):  # its experts are in the order of the trial's letters
        params.update(rf.spec_params(spec, [x for x in experts.split("+") if x]))
        tokens = rf.visual_tokens(spec)
        if tokens is not None:
            params["visual_tokens"] = str(tokens)
    if result and result.get("world_size") is not None:
        params["world_size"] = str(result["world_size"])
    values = rf.result_metrics(result, objective)
    values.update(interval_metrics(result or {}))  # intervals and the blind control
    if frozen_trial.value is not None:
        values.setdefault(objective, rf.rounded(frozen_trial.value))
    rows = rf.read_steps(trial_dir / TD.METRICS) if trial_dir else []
    return TrialRecord(params, values, rows, objective, bool(result and result.get("scores")))
