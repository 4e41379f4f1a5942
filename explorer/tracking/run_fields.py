"""What a trial's MLflow run holds: params a compare view can use, metrics under one name each,
and the files worth keeping. Pure functions of the trial's settings and its trial directory.

Names: the objective is one metric named after it ("avg"), benchmark scores are `score/<bench>`,
every other number of result.json keeps its own path (`stage_time_s/sft`, `throughput/sft/
tokens_per_s`, ...); an `X_ci` pair becomes `X_lo`/`X_hi` (`avg_lo`, `score/gqa_lo`); step
histories from metrics.jsonl are `<stage>/<name>`, and eval lines feed the score metrics' history.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable

from explorer.study.attrs import SCORE_PREFIX
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)

# result.json sections keyed by stage: a stage the trial skipped reports zeros there
_ZERO_IS_SKIPPED = ("stage_time_s", "throughput", "steps")
# result.json fields that are settings or words, not measurements (settings are run params)
_NOT_METRICS = ("objective_name", "direction", "world_size", "strategy", "precision")
_SPEC_SKIPPED = ("name", "cache_dir")  # the run's name; a machine-local path
_STEP_KEYS = ("stage", "step", "time", "tag")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rounded(value: float) -> float:
    """Six significant digits: what a table can show, far below run-to-run noise."""
    return float(f"{value:.6g}")


def objective_of(result: dict | None, default: str) -> str:
    return str((result or {}).get("objective_name") or default)


def _metric_name(key: str, objective: str) -> str:
    return {"objective": objective, "scores": SCORE_PREFIX.rstrip("/")}.get(key, key)


def _leaves(value: Any, name: str, ci: bool) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{name}/{k}", ci)
    elif ci and isinstance(value, (list, tuple)) and len(value) == 2:
        yield f"{name}_lo", value[0]
        yield f"{name}_hi", value[1]
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{name}/{i}", ci)
    else:
        yield name, value


def result_metrics(result: dict | None, objective: str) -> dict[str, float]:
    """result.json's numbers as metrics (names in the module docstring); skipped stages left out."""
    out: dict[str, float] = {}
    for key, value in (result or {}).items():
        if key in _NOT_METRICS:
            continue
        ci = key.endswith("_ci")
        name = _metric_name(key[:-3] if ci else key, objective)
        for leaf, v in _leaves(value, name, ci):
            if not is_number(v) or (key in _ZERO_IS_SKIPPED and v == 0):
                continue
            out[leaf] = rounded(v)
    return out


def read_steps(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line that is not JSON (a trial killed mid-write) is skipped, logged."""
    rows = []
    if not path.is_file():
        return rows
    for n, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s:%d: not JSON, skipped", path, n + 1)
    return rows


def step_metrics(rows: list[dict[str, Any]], objective: str, final_from_result: bool) -> list[tuple[str, float, int | None, int]]:
    """(name, value, time in ms or None, step) per number of each row. Eval rows are the score and
    objective histories; the last one is left out when result.json holds the same final figures."""
    evals = [i for i, r in enumerate(rows) if r.get("stage") == "eval"]
    skip = evals[-1] if evals and final_from_result else None
    out = []
    for i, row in enumerate(rows):
        if i == skip:
            continue
        stage, step, t = str(row.get("stage", "train")), int(row.get("step", i)), row.get("time")
        stamp = int(t * 1000) if is_number(t) and t > 1e9 else None
        for key, value in row.items():
            if key in _STEP_KEYS or not is_number(value):
                continue
            if stage == "eval":
                name = objective if key == "objective" else f"{SCORE_PREFIX}{key}"
            else:
                name = f"{stage}/{key}"
            out.append((name, rounded(value), stamp, step))
    return out


def final_eval_step(rows: list[dict[str, Any]]) -> int:
    steps = [int(r.get("step", 0)) for r in rows if r.get("stage") == "eval"]
    return steps[-1] if steps else 0


def spec_params(spec: dict[str, Any], letters: list[str]) -> dict[str, str]:
    """The resolved trial spec flattened to `spec.<path>`, experts by letter (`spec.expert.F.
    preset`), without None or empty values."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        if key in _SPEC_SKIPPED:
            continue
        if key == "experts" and isinstance(value, list):
            for i, entry in enumerate(value):
                letter = letters[i] if i < len(letters) else str(i)
                out.update(_flat(entry, f"spec.expert.{letter}"))
        else:
            out.update(_flat(value, f"spec.{key}"))
    return out


def _flat(value: Any, name: str) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{name}.{k}"))
        return out
    if value is None or value == [] or value == {}:
        return {}
    if isinstance(value, list):
        return {name: json.dumps(value)}
    return {name: str(value).lower() if isinstance(value, bool) else str(value)}


def visual_tokens(spec: dict[str, Any]) -> int | None:
    """Tokens the LLM sees per image: what the trial's fusion returns for its experts' grid (its
    compression and SVA query grid included), the fusion built on the meta device; None when the
    spec does not say."""
    import json

    from pydantic import ValidationError

    from trainers.meta_shapes import meta_fusion_shape
    from trainers.spec import ExpertEntry, FusionSpec
    from trainers.expert_entries import resolve_expert
    entries = [e for e in spec.get("experts") or [] if isinstance(e, dict)]
    if not entries:
        return None
    try:
        cfgs = [resolve_expert(ExpertEntry.model_validate(e)) for e in entries]
        fusion = FusionSpec.model_validate(spec.get("fusion") or {})
        return meta_fusion_shape(fusion.name, tuple(c.hidden_size for c in cfgs), cfgs[0].grid ** 2,
                                 json.dumps(fusion.options, sort_keys=True, default=str))[0]
    except (ValidationError, ValueError, KeyError, TypeError):
        return None


def setting_params(params: dict[str, Any], user_attrs: dict[str, Any]) -> dict[str, str]:
    """What differs between the study's trials, as run params: the expert set (also one
    `expert.<letter>` flag per candidate and `n_experts`), round, candidate, seed, and the
    varying settings and hyper-parameters under their study names."""
    experts = str(user_attrs.get("experts") or "")
    out = {"experts": experts, "n_experts": str(len(experts.split("+")) if experts else 0)}
    for key in ("round", "candidate", "seed"):
        if user_attrs.get(key) is not None:
            out[key] = str(user_attrs[key])
    for key, value in params.items():
        name = f"expert.{key.split('_', 1)[1]}" if key.startswith("expert_") else key
        out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def artifact_files(trial_dir: Path) -> list[tuple[Path, str | None]]:
    """(file or folder, artifact folder) to log: the spec, result, step metrics, predictions and logs, each
    log once (rank 0's file is a copy of what torchrun.log already holds)."""
    out: list[tuple[Path, str | None]] = [(trial_dir / n, None) for n in (TD.TRIAL_SPEC, TD.RESULT, TD.METRICS)
                                          if (trial_dir / n).is_file()]
    preds = trial_dir / TD.PREDICTIONS
    if preds.is_dir() and any(preds.iterdir()):
        out.append((preds, TD.PREDICTIONS))  # a folder: logged whole
    logs = trial_dir / TD.LOGS
    if logs.is_dir():
        has_torchrun = (logs / "torchrun.log").is_file()
        out += [(p, TD.LOGS) for p in sorted(logs.iterdir())
                if p.is_file() and not (has_torchrun and p.name == "rank0.log")]
    return out
