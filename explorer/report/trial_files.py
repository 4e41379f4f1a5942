"""A stored trial's files as a report finds them: its directory (also under a work directory that has
moved since), its result (trainers.trial_dir.read_result) and its spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from explorer.tracking.run_fields import visual_tokens
from trainers import trial_dir as TD


def trial_dir_of(trial, workdir: str | Path | None = None, study_name: str | None = None) -> Path | None:
    """The trial's directory: where the study recorded it, else at the same place under a work
    directory that has moved since."""
    recorded = trial.user_attrs.get("trial_dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    if workdir is not None and study_name is not None:
        name = Path(recorded).name if recorded else str(trial.number)  # the planned trial's directory
        moved = Path(workdir) / "trials" / study_name / name
        if moved.is_dir():
            return moved
    return None


def trial_result(trial, workdir: str | Path | None = None, study_name: str | None = None) -> dict[str, Any] | None:
    """The trial's result (scores, objective, system figures): the copy stored with the trial, else
    its directory's result.json; None when it has none."""
    if isinstance(trial.user_attrs.get("result"), dict):
        return trial.user_attrs["result"]
    return TD.read_result(trial_dir_of(trial, workdir, study_name))


def trial_visual_tokens(trial, workdir: str | Path | None, study_name: str) -> int | None:
    """Tokens the LLM sees per image, from the trial's trial.yaml (None when it is not there)."""
    tdir = trial_dir_of(trial, workdir, study_name)
    try:
        spec = yaml.safe_load((tdir / TD.TRIAL_SPEC).read_text()) if tdir else None
    except (OSError, yaml.YAMLError):
        return None
    return visual_tokens(spec) if isinstance(spec, dict) else None
