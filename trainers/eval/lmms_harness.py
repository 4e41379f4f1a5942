"""`eagle-explore eval CHECKPOINT --harness lmms-eval --tasks gqa,pope [--limit N] [--include-path DIR]`:
lmms-eval's own task definitions and scorers on a trial's model (the registered model
`eagle_explorer`, trainers/eval/lmms_model.py). Its results and per-item samples go to
OUT/lmms_eval/ (OUT defaults to <trial dir>/eval). Every task's name and dataset is checked
before any model is loaded: an unknown task, or a dataset that is neither a local copy nor in the
Hugging Face cache while offline, is one line naming it and how to stage it."""
from __future__ import annotations

import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

HARNESSES = ("builtin", "lmms-eval")
OUT_SUBDIR = "lmms_eval"
_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


class HarnessError(RuntimeError):
    """A task, dataset or the extra itself is missing (one line)."""


def check_installed() -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        raise HarnessError("lmms-eval 0.7.x is not installed (the lmms extra): pip install -e '.[lmms]'")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in _OFFLINE)


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import scan_cache_dir

    try:
        repos = scan_cache_dir().repos
    except Exception:  # no cache directory yet
        return False
    return any(r.repo_id == repo_id and r.repo_type == "dataset" for r in repos)


@lru_cache(maxsize=8)
def _manager(include_path: str | None):
    """lmms-eval's task index (it reads every task file once: seconds)."""
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def check_tasks(tasks: list[str], include_path: str | Path | None, datasets: bool = True):
    """The TaskManager for `tasks` after checking each one's name and (`datasets`) its dataset
    (HarnessError)."""
    manager = _manager(str(include_path) if include_path else None)
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known:
            hint = "" if include_path else " (a task of your own: pass its folder as include path)"
            raise HarnessError(f"--tasks: unknown lmms-eval task {name!r}{hint}")
        if not datasets:
            continue
        config = manager._get_config(name)  # lmms-eval's own reader: includes resolved
        path, kwargs = config.get("dataset_path"), config.get("dataset_kwargs") or {}
        if not path:
            continue
        if kwargs.get("load_from_disk") or str(path).startswith(("/", ".", "~")):
            if not Path(str(path)).expanduser().exists():
                raise HarnessError(f"task {name}: dataset_path {path} does not exist (a local copy the task reads)")
        elif _offline() and not _in_hf_cache(str(path)):
            raise HarnessError(f"task {name}: dataset {path} is not in the Hugging Face cache and "
                               f"{'/'.join(_OFFLINE)} is set: stage it where the hub is reachable "
                               f"(huggingface-cli download --repo-type dataset {path}) or point the task at a local copy")
    return manager


def run_lmms_eval(checkpoint: str | Path, tasks: list[str], *, limit: int | None = None,
                  include_path: str | Path | None = None, out_dir: str | Path | None = None,
                  batch_size: int = 8, device: str = "cpu") -> dict[str, Any]:
    """lmms-eval on the checkpoint; writes OUT/lmms_eval/results.json and samples_<task>.jsonl and
    returns {"scores": {"<task>/<metric>": value}, "harness": "lmms-eval", "tasks": [...]}."""
    check_installed()
    if not tasks:
        raise HarnessError("--tasks: give at least one lmms-eval task name")
    from trainers.eval.cli import resolve_checkpoint

    model_dir, trial_yaml = resolve_checkpoint(checkpoint)  # FileNotFoundError: one line too
    manager = check_tasks(tasks, include_path)
    from lmms_eval.evaluator import simple_evaluate

    out = (Path(out_dir).expanduser() if out_dir is not None else trial_yaml.parent / "eval") / OUT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    res = simple_evaluate(model="eagle_explorer", model_args=f"trial={model_dir},batch_size={batch_size},device={device}",
                          tasks=tasks, task_manager=manager, limit=limit, log_samples=True, bootstrap_iters=0)
    scores = {f"{task}/{metric.split(',')[0]}": float(v) for task, metrics in res["results"].items()
              for metric, v in metrics.items() if isinstance(v, (int, float)) and not metric.endswith("_stderr,none")
              and metric != "alias"}
    for task, samples in (res.get("samples") or {}).items():
        with (out / f"samples_{task}.jsonl").open("w", encoding="utf-8") as fh:
            for s in samples:
                fh.write(json.dumps(s, default=str, ensure_ascii=False) + "\n")
    summary = {"harness": "lmms-eval", "tasks": tasks, "limit": limit, "scores": scores,
               "results": res["results"], "versions": res.get("versions", {})}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
