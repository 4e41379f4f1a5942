"""A trial's final evaluation on lmms-eval's own tasks and scorers (eval.harness: lmms-eval), on
the model in memory, rank 0 alone (the others wait for its result). It returns what the built-in
evaluation returns (trainers/eval/runner.evaluate): scores "<task>" (the task's first metric, in
lmms-eval's units) and "<task>/<metric>", the objective, and per-item predictions under
predictions/<task>.jsonl (question_id = lmms-eval's doc_id), so paired comparisons, early rungs and
the study's reports read them as they read the benchmarks'. Intervals are bootstrapped where the
samples allow it: a task whose first metric lmms-eval aggregates by the mean of per-item values.
The tasks are checked (names, datasets) at pre-flight, trainers/preflight.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from trainers.eval.aggregate import objective
from trainers.eval.base import Benchmark, EvalItem
from trainers.eval.bootstrap import bootstrap_eval
from trainers.spec import TrialSpec
from trainers import trial_dir as TD


class TaskSamples(Benchmark):
    """An lmms-eval task's per-item values as a benchmark for the bootstrap: an item's score is the
    value lmms-eval logged for it, the headline their mean (as lmms-eval's `mean` aggregation)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def score_item(self, item: EvalItem, prediction: str) -> float:
        return float(item.meta["score"])

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        return {self.name: sum(self.score_item(it, p) for it, p in zip(items, predictions)) / len(items)}


def _metrics(config: dict[str, Any]) -> list[tuple[str, bool]]:
    """(metric, aggregated by the mean) in the task's metric_list order."""
    return [(m["metric"], str(m.get("aggregation", "mean")) == "mean") for m in config.get("metric_list") or []]


def task_scores(results: dict[str, Any], configs: dict[str, Any], tasks: list[str]) -> dict[str, float]:
    """lmms-eval's results as scores: "<task>/<metric>" for every numeric metric, "<task>" its first."""
    scores: dict[str, float] = {}
    for task in tasks:
        for key, value in (results.get(task) or {}).items():
            metric = key.split(",")[0]
            if isinstance(value, (int, float)) and "_stderr" not in metric and metric != "alias":
                scores[f"{task}/{metric}"] = float(value)
        first = next((m for m, _ in _metrics(configs.get(task) or {}) if f"{task}/{m}" in scores), None)
        if first is None:
            first = next((k.split("/", 1)[1] for k in scores if k.startswith(f"{task}/")), None)
        if first is None:
            raise ValueError(f"lmms-eval task {task}: no numeric metric in its results")
        scores[task] = scores[f"{task}/{first}"]
    return scores


def _items(task: str, samples: list[dict[str, Any]], metric: str) -> tuple[list[EvalItem], list[str]] | None:
    """The task's samples as (items, predictions) for the bootstrap, None when a value is not a number."""
    items, preds = [], []
    for s in samples:
        value = s.get(metric)
        if not isinstance(value, (int, float)):
            return None
        resp = s.get("filtered_resps") or [""]
        items.append(EvalItem(qid=str(s["doc_id"]), image="", prompt="", answer=s.get("target"), meta={"score": float(value)}))
        preds.append(str(resp[0]))
    return (items, preds) if items else None


def _context(sample: dict[str, Any]) -> str:
    """The request's text (its first argument) as lmms-eval logged it."""
    first: Any = sample.get("arguments")
    while isinstance(first, (dict, list, tuple)) and first:  # [[ctx, ...]] or {"gen_args_0": {"arg_0": ctx}}
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    return first if isinstance(first, str) else ""


def write_samples(out_dir: Path, task: str, samples: list[dict[str, Any]], metric: str | None) -> None:
    path = out_dir / TD.PREDICTIONS / f"{task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for s in sorted(samples, key=lambda s: s["doc_id"]):
            value = s.get(metric) if metric else None
            f.write(json.dumps({"question_id": str(s["doc_id"]), "prompt": _context(s), "answer": str((s.get("filtered_resps") or [""])[0]), "ground_truth": s.get("target"),
                                "score": float(value) if isinstance(value, (int, float)) else None},
                               ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def run_tasks(model, spec: TrialSpec, out_dir: Path, intervals: bool) -> dict[str, Any]:
    """lmms-eval on this process (rank 0): the evaluation result dict (see the module's doc), with
    bootstrap intervals when `intervals`."""
    from lmms_eval.evaluator import simple_evaluate

    from trainers.eval.lmms_harness import check_tasks
    from trainers.eval.lmms_model import EagleExplorerLMM
    from trainers.modeling.export import ExportedModel
    from trainers.stages.recipes import data_image_size

    ev = spec.eval
    manager = check_tasks(ev.tasks, ev.include_path)
    info = {"template": spec.llm.template, "image_side": data_image_size(spec), "max_new_tokens": ev.max_new_tokens}
    lmm = EagleExplorerLMM(exported=ExportedModel(model, info), batch_size=ev.batch_size)
    res = simple_evaluate(model=lmm, tasks=list(ev.tasks), task_manager=manager, limit=ev.limit,
                          log_samples=True, bootstrap_iters=0)
    configs = res.get("configs") or {}
    scores = task_scores(res["results"], configs, list(ev.tasks))
    runs, items_full = [], 0
    for task in ev.tasks:
        samples = (res.get("samples") or {}).get(task) or []
        items_full += len(samples)
        metrics = _metrics(configs.get(task) or {})
        first, by_mean = metrics[0] if metrics else (None, False)
        write_samples(out_dir, task, samples, first)
        got = _items(task, sorted(samples, key=lambda s: s["doc_id"]), first) if by_mean else None
        if got is not None:
            runs.append((TaskSamples(task), *got))
    result: dict[str, Any] = {"scores": scores, "objective": objective(scores, ev), "objective_name": ev.objective,
                              "scorer_profile": "lmms-eval", "items_done": items_full, "items_full": items_full,
                              "early_stopped": False, "harness": {"name": "lmms-eval", "tasks": list(ev.tasks),
                                                                  "versions": res.get("versions", {})}}
    if intervals and ev.bootstrap.resamples and runs:
        resampled = {b.name for b, _, _ in runs}
        whole = (ev.objective == "avg" and resampled == set(ev.tasks)) or ev.objective in resampled
        obj = (lambda s: objective(s, ev)) if whole else None
        result.update(bootstrap_eval(runs, obj, resamples=ev.bootstrap.resamples, seed=ev.bootstrap.seed,
                                     confidence=ev.bootstrap.confidence))
    return result


def evaluate_tasks(model, spec: TrialSpec, out_dir: str | Path, *, rank: int = 0, world_size: int = 1,
                   final: bool = True, intervals: bool | None = None) -> dict[str, Any]:
    """run_tasks on rank 0 (intervals: default `final`); every rank returns its result (an error
    there is raised on every rank)."""
    from trainers.training import distributed as D

    shared = world_size > 1 and D.active()
    result, error = None, None
    if rank == 0:
        try:
            result = run_tasks(model, spec, Path(out_dir), final if intervals is None else intervals)
        except Exception as err:
            if not shared:
                raise
            error = f"{type(err).__name__}: {err}"
    if shared:
        result, error = D.broadcast_object((result, error))
    if error:
        raise RuntimeError(f"lmms-eval evaluation failed: {error}")
    return result
