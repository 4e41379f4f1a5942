"""Loading a study file: the pydantic model (explorer.study.spec), then the cross-checks that need the
registries it names (strategy options, storage, a sample trial spec)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from explorer.strategies import build_strategy
from explorer.study.spec import StudyError, StudySpec, validation_line, load_base_trial
from explorer.study.storage import check_storage
from explorer.study.trial_specs import check_base_trial
from search_spaces import SearchSpaceError, load_search_space
from trainers.spec import read_yaml_mapping


def parse_study(data: Any, source: str = "<study>", base_dir: Path | None = None) -> StudySpec:
    """Validate a study mapping completely (cross-checks and a sample trial spec included)."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study file is a mapping at the top level")
    base_dir = base_dir or Path.cwd()
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        raise StudyError(validation_line(source, err)) from None
    spec._source = source
    try:
        spec._space = load_search_space(spec.search_space, base_dir)
    except SearchSpaceError as err:
        raise StudyError(f"{source}: search_space: {err}") from None
    spec._base_trial = load_base_trial(spec.base_trial, base_dir, source)
    strategy = build_strategy(spec)  # raises StudyError on impossible strategy options
    check_storage(spec)
    check_base_trial(spec, strategy.sample_point())
    return spec


def load_study(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    return parse_study(read_yaml_mapping(path, "a study file", StudyError), str(path), path.resolve().parent)
