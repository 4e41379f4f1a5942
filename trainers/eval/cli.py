"""`eagle-explore eval CHECKPOINT --benchmarks gqa,pope --limit N [--data-root DIR] [--out DIR]
[--nproc N] [--profile official|lmms_eval]`: evaluate a trained trial (the CLI helper wires
run_eval into the app). The scorer profile defaults to the trial's eval.scorer_profile.

CHECKPOINT is a trial directory (trial.yaml + stages/sft/model) or a saved EagleModel directory
inside one (trial.yaml found in it or up to three levels above: the chat template, the synthetic
suite's settings and the cache directory come from there). nproc > 1 spawns that many processes
(gloo on CPU, NCCL on GPU) that each evaluate a shard; rank 0 gathers and scores."""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from trainers.training import distributed as D
from trainers.eval.base import check_profile
from trainers.eval.benchmarks import parse_benchmark_list
from trainers.eval.runner import evaluate
from trainers.spec import TrialSpec, load_trial_spec, parse_trial_spec
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)

MODEL_CONFIG = "eagle.json"
RESULT_FILE = "eval_result.json"


def resolve_checkpoint(checkpoint: str | Path) -> tuple[Path, Path]:
    """(model dir, trial.yaml) of a trial directory or of a model directory inside one."""
    ckpt = Path(checkpoint).expanduser().resolve()
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    if (ckpt / TD.TRIAL_SPEC).is_file():
        model_dir = ckpt / "stages" / "sft" / "model"
        if not (model_dir / MODEL_CONFIG).is_file():
            raise FileNotFoundError(f"{ckpt} is a trial directory without a finished model "
                                    f"(no {model_dir / MODEL_CONFIG})")
        return model_dir, ckpt / TD.TRIAL_SPEC
    if not (ckpt / MODEL_CONFIG).is_file():
        raise FileNotFoundError(f"{ckpt} is neither a trial directory (trial.yaml) nor a saved model ({MODEL_CONFIG})")
    for parent in list(ckpt.parents)[:3]:
        if (parent / TD.TRIAL_SPEC).is_file():
            return ckpt, parent / TD.TRIAL_SPEC
    raise FileNotFoundError(f"no trial.yaml in the 3 folders above {ckpt}: it names the chat template "
                            "the model was trained with")


def eval_spec(trial_yaml: Path, benchmarks: str | list[str], limit: int | None,
              data_root: str | Path | None, profile: str | None = None) -> TrialSpec:
    spec = load_trial_spec(trial_yaml)
    update: dict[str, Any] = {"benchmarks": parse_benchmark_list(benchmarks), "limit": limit}
    if profile is not None:
        update["scorer_profile"] = check_profile(profile)
    if data_root is not None:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} is not a directory")
        update["data_root"] = str(root.resolve())
    if limit is not None and limit <= 0:
        raise ValueError(f"--limit must be positive, got {limit}")
    # validated again so a bad value is a spec error (one line), not a late failure
    return parse_trial_spec({**spec.model_dump(), "eval": {**spec.eval.model_dump(), **update}}, str(trial_yaml))


def _load_model(model_dir: Path, device: torch.device):
    from trainers.modeling.eagle import EagleModel

    return EagleModel.from_pretrained(model_dir).to(device).eval()


def _device(rank: int) -> torch.device:
    return torch.device("cuda", rank % torch.cuda.device_count()) if torch.cuda.is_available() else torch.device("cpu")


def _worker(rank: int, nproc: int, init_file: str, model_dir: str, spec_json: str, out_dir: str) -> None:
    device = _device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    D.init_group(device, init_method=f"file://{init_file}", rank=rank, world_size=nproc)
    try:
        model = _load_model(Path(model_dir), device)
        spec = TrialSpec.model_validate_json(spec_json)
        result = evaluate(model, model.tokenizer, spec, Path(out_dir), rank=rank, world_size=nproc)
        if rank == 0:
            (Path(out_dir) / RESULT_FILE).write_text(json.dumps(result, indent=2))
    finally:
        D.shutdown(wait=False)


def run_eval(checkpoint: str | Path, benchmarks: str | list[str], *, limit: int | None = None,
             data_root: str | Path | None = None, out_dir: str | Path | None = None,
             nproc: int = 1, profile: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint; writes OUT/predictions/<bench>.jsonl and OUT/eval_result.json
    (OUT defaults to <trial dir>/eval) and returns {"scores", "objective", "objective_name",
    "scorer_profile"}. `profile` overrides the trial's eval.scorer_profile."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"--nproc must be a positive integer, got {nproc!r}")
    model_dir, trial_yaml = resolve_checkpoint(checkpoint)
    spec = eval_spec(trial_yaml, benchmarks, limit, data_root, profile)
    out = Path(out_dir).expanduser() if out_dir is not None else trial_yaml.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    if spec.cache_dir is None:  # as the trial resolved it, so the synthetic suite is shared
        spec = spec.model_copy(update={"cache_dir": str(trial_yaml.parent.resolve().parent / "cache")})
    logger.info("evaluating %s on %s with %d process(es) -> %s", model_dir, ", ".join(spec.eval.benchmarks), nproc, out)
    if nproc == 1:
        model = _load_model(model_dir, _device(0))
        result = evaluate(model, model.tokenizer, spec, out, rank=0, world_size=1)
        (out / RESULT_FILE).write_text(json.dumps(result, indent=2))
        return result
    (out / RESULT_FILE).unlink(missing_ok=True)  # never report a previous run's result
    init_file = out / f".dist-store-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        mp.spawn(_worker, args=(nproc, str(init_file), str(model_dir), spec.model_dump_json(), str(out)),
                 nprocs=nproc, join=True)
    finally:
        init_file.unlink(missing_ok=True)
    return json.loads((out / RESULT_FILE).read_text())
