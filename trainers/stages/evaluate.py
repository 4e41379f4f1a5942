"""Evaluation of a trial's model: the held-out loss and the benchmarks, on the trained weights as
they live in the engine (ZeRO-3: on the partitions, DeepSpeed's hooks gathering one module at a
time, so every rank runs the same forwards), under the trial's precision (bf16 autocast when
training bf16, whatever the strategy)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from trainers.training import distributed as D
from trainers.stages import recipes as S
from trainers.stages.context import StageContext
from trainers.training.loader import to_device
from trainers import trial_dir as TD



@contextmanager
def eval_mode(ctx: StageContext, model) -> Iterator[None]:
    """No grad, eval mode, bf16 autocast when the trial trains bf16; training mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(ctx.env.device.type, dtype=torch.bfloat16, enabled=ctx.bf16):
            yield
    finally:
        model.train(was_training)


def heldout_loss(ctx: StageContext, model) -> float:
    """Token-weighted loss on the held-out set; every rank runs the same number of forwards
    (ZeRO-3 gathers parameters collectively), the last ones weighted 0 when the split is uneven."""
    ds = ctx.dataset(ctx.data.heldout, ctx.spec.llm.template, subset=False)  # the held-out loss stays whole
    mb, env = ctx.spec.train.stages["sft"].micro_batch_size, ctx.env
    n_batches = math.ceil(len(ds) / (mb * env.world_size))
    collate = S.make_collate(model, "sft", ctx.spec)  # image tokens expanded as in training
    total = torch.zeros(2, dtype=torch.float64, device=env.device)
    with eval_mode(ctx, model):
        for b in range(n_batches):
            start = (b * env.world_size + env.rank) * mb
            idx = [i for i in range(start, start + mb) if i < len(ds)]
            weight = 1.0 if idx else 0.0
            batch = to_device(collate([ds[i] for i in (idx or [0])]), env.device)
            loss = model(**batch).loss
            n = batch["num_targets"] * weight  # a host int from the collate: no device sync
            total += torch.stack([loss.detach().double() * n, loss.new_tensor(n, dtype=torch.float64)])
    total = D.all_reduce(total)
    return float(total[0] / total[1])


def benchmarks(ctx: StageContext, model, step: int, final: bool = True, fidelity=None) -> dict[str, Any]:
    """Evaluate on every rank; rank 0 logs an eval line (scores + objective) that pruners read.
    The final evaluation also has intervals and the blind control (trainers/eval/runner.py). A rung
    below the top (trainers/stages/fidelity.py) evaluates on its slim subsets, without intervals, and
    stops early when its early-stop test says the model is behind the reference."""
    from trainers.eval import evaluate  # the evaluation package (required when benchmarks are set)
    from trainers.eval.early_stop import EarlyStop

    spec, stop, intervals = ctx.spec, None, final
    if fidelity is not None and not fidelity.final:
        final, intervals = False, fidelity.intervals
        if fidelity.eval_limit is not None:
            limit = min(fidelity.eval_limit, spec.eval.limit or fidelity.eval_limit)
            spec = spec.model_copy(update={"eval": spec.eval.model_copy(update={"limit": limit})})
        es = fidelity.early_stop
        if es is not None:
            stop = EarlyStop(es.reference, es.alpha, es.min_items, es.every,
                             maximize=spec.eval.objective != "heldout_loss")
    with eval_mode(ctx, model):
        if spec.eval.harness == "lmms-eval":  # lmms-eval's tasks (no early stop: it scores at the end)
            from trainers.eval.lmms_objective import evaluate_tasks

            ev = evaluate_tasks(model, spec, ctx.out, rank=ctx.env.rank, world_size=ctx.env.world_size, final=final,
                                intervals=intervals)
        else:
            ev = evaluate(model, model.tokenizer, spec, ctx.out, rank=ctx.env.rank, world_size=ctx.env.world_size,
                          final=final, early_stop=stop, intervals=intervals)
    ctx.metrics.write({"stage": "eval", "tag": "sft", "step": step, "objective": ev["objective"], **ev["scores"]})
    return ev


def item_scores(out_dir: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """Per-item scores of the evaluation just written (predictions/<bench>.jsonl), by question id."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        path = out_dir / TD.PREDICTIONS / f"{name}.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            out[name] = {str(r["question_id"]): float(r["score"]) for r in rows}
    return out


def interim_hook(ctx: StageContext, model):
    """SFT step hook: evaluate every eval.interval_steps steps (not at the end: the trial's end does)."""
    every = ctx.spec.eval.interval_steps
    if not (every and ctx.spec.eval.scored()):
        return None

    def hook(done: int, total: int) -> None:
        if done % every or done >= total:
            return
        benchmarks(ctx, model, done, final=False)

    return hook
