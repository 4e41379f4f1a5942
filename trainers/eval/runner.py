"""Distributed evaluation: every process generates answers for a strided shard of every benchmark
(batched greedy decoding through model.generate), rank 0 gathers them with
trainers.training.distributed.gather_objects, writes out_dir/predictions/<bench>.jsonl, scores the
full set once and shares the result with every rank. The final evaluation also puts bootstrap
intervals on every score and the objective (trainers/eval/bootstrap.py) and, with eval.blind, scores
the same items with blank images (predictions/<bench>.blind.jsonl)."""
from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trainers.training import distributed as D
from trainers.data.images import to_uint8
from trainers.data.templates import IMAGE_TOKEN, build_prompt, encode_prompt, stop_token_ids
from trainers.eval.aggregate import objective
from trainers.eval.base import Benchmark, EvalItem, slim_subset
from trainers.eval.bootstrap import bootstrap_eval
from trainers.eval.benchmarks import get_benchmark, parse_benchmark_list
from trainers.eval.synthetic_suite import ensure_suite
from trainers.spec import TrialSpec
from trainers.stages.recipes import data_image_size
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)

SLIM_SEED = 0  # slim subsets must not depend on the trial's seed: every trial sees the same items
BLANK_LEVEL = 128  # the blind control's image: uniform mid-grey (uint8), the same for every item


def _distributed(world_size: int) -> bool:
    return world_size > 1 and D.active()


def _share(obj: Any, world_size: int) -> Any:
    """Rank 0's object on every rank."""
    return D.broadcast_object(obj) if _distributed(world_size) else obj


def to_tensor(images: Sequence[Image.Image], side: int) -> torch.Tensor:
    """[B, 3, side, side] uint8, resized as the training data is (trainers.data.images); the model
    converts on the device and each expert applies its own resize and normalisation."""
    return torch.stack([to_uint8(img, side) for img in images])


def _data_root(spec: TrialSpec, out_dir: Path, rank: int, world_size: int) -> Path:
    if spec.eval.data_root:
        return Path(spec.eval.data_root).expanduser()
    syn = spec.data.synthetic
    n, seed, size = (syn.n_eval, syn.seed, syn.image_size) if syn else (32, spec.seed, 64)
    cache = Path(spec.cache_dir).expanduser() if spec.cache_dir else out_dir.resolve().parent / "cache"
    root: Path | None = None
    error = None
    if rank == 0:
        try:
            root = ensure_suite(cache, n, seed, size)
        except Exception as err:  # shared so the other ranks stop instead of waiting
            error = f"{type(err).__name__}: {err}"
    root, error = _share((root, error), world_size)
    if error:
        raise RuntimeError(f"writing the synthetic eval suite under {cache} failed: {error}")
    return root


class Generator:
    """Batched generation with the trial's chat template, as training formatted the prompts."""

    def __init__(self, model, tokenizer, template: str, *, max_new_tokens: int, side: int,
                 blank: bool = False) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_new_tokens, self.side, self.blank = max_new_tokens, side, blank
        params = inspect.signature(model.generate).parameters
        self.kwargs: dict[str, Any] = {}
        if tokenizer is not None and ("stop_token_ids" in params or any(
                p.kind is p.VAR_KEYWORD for p in params.values())):
            self.kwargs["stop_token_ids"] = stop_token_ids(tokenizer, template)

    def prompt(self, item: EvalItem) -> str:
        return build_prompt(f"{IMAGE_TOKEN}\n{item.prompt}", self.template)

    def __call__(self, items: Sequence[EvalItem]) -> list[str]:
        if self.blank:  # the blind control: same prompts, no visual information
            images = torch.full((len(items), 3, self.side, self.side), BLANK_LEVEL, dtype=torch.uint8)
        else:
            images = to_tensor([it.load_image() for it in items], self.side)
        questions = [f"{IMAGE_TOKEN}\n{it.prompt}" for it in items]
        if self.tokenizer is not None:  # token ids with BOS exactly as in training
            prompts: list = [encode_prompt(q, self.tokenizer, self.template) for q in questions]
        else:
            prompts = [build_prompt(q, self.template) for q in questions]
        with torch.no_grad():
            out = self.model.generate(images, prompts, max_new_tokens=self.max_new_tokens, **self.kwargs)
        if len(out) != len(items):
            raise RuntimeError(f"model.generate returned {len(out)} answers for {len(items)} prompts")
        return [str(o) for o in out]


def _generate_shard(gen: Generator, items: Sequence[EvalItem], rank: int, *, world_size: int,
                    batch_size: int, lockstep: bool = False) -> list[tuple[int, str]]:
    """This rank's answers. With `lockstep` (a model partitioned over the ranks, whose every forward is
    collective) each rank runs the same number of batches: one out of items repeats an item and drops
    the answers."""
    mine = list(range(rank, len(items), world_size))  # strided: shards differ by at most one item
    longest = math.ceil(len(items) / world_size) if lockstep else len(mine)
    out: list[tuple[int, str]] = []
    for start in range(0, longest, batch_size):
        idx = mine[start:start + batch_size]
        if not idx:
            gen([items[mine[-1] if mine else 0]])
            continue
        out.extend(zip(idx, gen([items[i] for i in idx])))
    return out


def _gather(local: list[tuple[int, str]], n: int, rank: int, world_size: int) -> list[str] | None:
    """All predictions in item order on rank 0 (None elsewhere)."""
    if _distributed(world_size):
        parts = D.gather_objects(local)
        if rank != 0 or parts is None:
            return None
        merged = [p for part in parts for p in part]
    else:
        merged = local
    preds: list[str | None] = [None] * n
    for i, p in merged:
        preds[i] = p
    missing = [i for i, p in enumerate(preds) if p is None]
    if missing:
        raise RuntimeError(f"gathered predictions lack items {missing[:5]} (of {n})")
    return preds  # type: ignore[return-value]


def write_predictions(path: Path, bench: Benchmark, items: Sequence[EvalItem], preds: Sequence[str],
                      gen: Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for item, pred in zip(items, preds):
            f.write(json.dumps({"question_id": item.qid, "prompt": gen.prompt(item), "answer": pred,
                                "ground_truth": item.answer, "score": bench.score_item(item, pred)},
                               ensure_ascii=False) + "\n")
    tmp.replace(path)


def _statistics(ev, runs: list, blind_runs: list, scores: dict[str, float]) -> dict[str, Any]:
    """Intervals (and the blind control's scores) of a final evaluation, as result.json carries them;
    `scores` holds every run's summary (sub-figures included)."""
    out: dict[str, Any] = {}
    if undefined := {b.name: why for b, _, _ in runs if (why := b.undefined(scores)) is not None}:
        out["scores_undefined"] = undefined
    blind_undefined: dict[str, str] = {}
    if blind_runs:
        blind_scores: dict[str, float] = {}
        for bench, items, preds in blind_runs:
            summary = bench.summarize(items, preds)
            blind_scores.update({k: v for k, v in summary.items() if "/" not in k})
            if (why := bench.undefined(summary)) is not None:  # no "beats blind" against it
                blind_undefined[bench.name] = why
        out["blind_scores"] = blind_scores
        out["blind_objective"] = None if ev.objective == "heldout_loss" else objective(blind_scores, ev)
        if blind_undefined:
            out["blind_undefined"] = blind_undefined
    bs = ev.bootstrap
    if bs.resamples and runs:
        obj = None if ev.objective == "heldout_loss" else (lambda scores: objective(scores, ev))
        blind = {bench.name: preds for bench, _, preds in blind_runs
                 if bench.name not in blind_undefined} if blind_runs else None
        out.update(bootstrap_eval(runs, obj, resamples=bs.resamples, seed=bs.seed, confidence=bs.confidence, blind=blind))
    return out


def _generate_checked(gen: Generator, bench: Benchmark, items: Sequence[EvalItem], *, rank: int, world_size: int,
                      batch_size: int, early_stop, lockstep: bool = False) -> tuple[list[str] | None, int, bool]:
    """Predictions of `items` (rank 0; None elsewhere), in chunks that each end with the early-stop
    test (the chunks are whole rounds of batches over the ranks, so every batch is as without
    them). Returns (predictions, items done, stopped early)."""
    if early_stop is None:
        return _gather(_generate_shard(gen, items, rank, world_size=world_size, batch_size=batch_size, lockstep=lockstep), len(items), rank,
                       world_size), \
            len(items), False
    per_round = batch_size * world_size
    chunk = -(-early_stop.every // per_round) * per_round
    preds: list[str] = []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        got = _gather(_generate_shard(gen, part, rank, world_size=world_size, batch_size=batch_size, lockstep=lockstep), len(part), rank, world_size)
        stop = False
        if rank == 0:
            preds.extend(got)
            stop = early_stop.add(bench.name, [it.qid for it in part],
                                  [bench.score_item(it, p) for it, p in zip(part, got)])
        if _share(stop, world_size):
            return (preds if rank == 0 else None), start + len(part), True
    return (preds if rank == 0 else None), len(items), False


def evaluate(model, tokenizer, spec: TrialSpec, out_dir: str | Path, *, rank: int = 0,
             world_size: int = 1, final: bool = True, early_stop=None, intervals: bool | None = None) -> dict[str, Any]:
    """Run spec.eval on this process's shard; every rank returns {"scores", "objective",
    "objective_name", "scorer_profile", "items_done", "items_full", "early_stopped"} (objective
    None when it is the held-out loss, which the trainer computes), and when `final` the
    intervals and blind scores of `_statistics`. With `early_stop` (trainers/eval/early_stop.py)
    the evaluation ends at the first test that finds the model behind its reference: the scores
    are those of the items done. `intervals` (default: `final`) asks for the bootstrap intervals
    without the blind control (a rung that promotes by intervals)."""
    out_dir = Path(out_dir)
    intervals = final if intervals is None else intervals
    ev = spec.eval
    names = parse_benchmark_list(ev.benchmarks)
    root = _data_root(spec, out_dir, rank, world_size)
    benches = [get_benchmark(name, ev.scorer_profile) for name in names]
    subsets = [slim_subset(bench, bench.load(root / name), ev.limit, seed=SLIM_SEED)
               for name, bench in zip(names, benches)]
    items_done, stopped = 0, False
    gen = Generator(model, tokenizer, spec.llm.template, max_new_tokens=ev.max_new_tokens, side=data_image_size(spec))
    blind_gen = Generator(model, tokenizer, spec.llm.template, max_new_tokens=ev.max_new_tokens, side=gen.side, blank=True) \
        if final and ev.blind else None
    runs: list = []
    blind_runs: list = []
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    # Rank 0 scores. Under torch.distributed its errors are shared (the other ranks would otherwise
    # wait forever); alone, they propagate as they are.
    shared = _distributed(world_size)
    lockstep = shared and bool(getattr(model, "partitioned_across_ranks", lambda: False)())
    scores: dict[str, float] = {}
    result, error = None, None
    try:
        for name, bench, items in zip(names, benches, subsets):
            if stopped:
                break
            preds, done, stopped = _generate_checked(gen, bench, items, rank=rank, world_size=world_size, batch_size=ev.batch_size, early_stop=early_stop,
                                                     lockstep=lockstep)
            items, items_done = items[:done], items_done + done
            if rank == 0 and error is None:
                try:
                    write_predictions(out_dir / TD.PREDICTIONS / f"{name}.jsonl", bench, items, preds, gen)
                    scores.update(bench.summarize(items, preds))
                    runs.append((bench, items, preds))
                    logger.info("eval %s: %.2f on %d items", name, scores[name], len(items))
                except Exception as err:
                    if not shared:
                        raise
                    error = f"{name}: {type(err).__name__}: {err}"
            if blind_gen is not None:
                blind = _gather(_generate_shard(blind_gen, items, rank, world_size=world_size, batch_size=ev.batch_size, lockstep=lockstep),
                                len(items), rank, world_size)
                if rank == 0 and error is None:
                    try:
                        write_predictions(out_dir / TD.PREDICTIONS / f"{name}.blind.jsonl", bench, items, blind, gen)
                        blind_runs.append((bench, items, blind))
                    except Exception as err:
                        if not shared:
                            raise
                        error = f"{name} (blind): {type(err).__name__}: {err}"
        if rank == 0 and error is None:
            try:
                value = None if ev.objective == "heldout_loss" and "heldout_loss" not in scores \
                    else objective(scores, ev)
                result = {"scores": scores, "objective": value, "objective_name": ev.objective,
                          "scorer_profile": ev.scorer_profile, "items_done": items_done,
                          "items_full": sum(len(s) for s in subsets), "early_stopped": stopped}
                if intervals and not stopped:
                    result.update(_statistics(ev, runs, blind_runs, scores))
            except Exception as err:
                if not shared:
                    raise
                error = f"objective {ev.objective!r}: {type(err).__name__}: {err}"
    finally:  # an error in loading/generation is this rank's own: torchrun stops the others
        if was_training and hasattr(model, "train"):
            model.train()
    result, error = _share((result, error), world_size)
    if error:
        raise RuntimeError(f"evaluation failed: {error}")
    return result
