"""Pre-alignment stage 1 of a trial: each expert alone with its own projector and the (frozen)
align LLM, trained once per cache key and shared through the stage-1 cache by every trial."""
from __future__ import annotations

import logging
import time
from typing import Any

from trainers import trial_dir as TD
from trainers.training import distributed as D
from trainers.stages import recipes as S
from trainers.stages.context import StageContext
from trainers.caches.stage1 import KeyedCache, Stage1Cache
from trainers.modeling.saving import whole_state
from trainers.training.loop import StageJob
from trainers.spec import seed_for


logger = logging.getLogger(__name__)


def claim(cache: KeyedCache, key: str, name: str, *, is_main: bool, poll_s: float = 2.0,
          what: str = "stage-1") -> int | None:
    """None when `key` is cached; otherwise this trial makes it: rank 0 gets the lock's descriptor,
    other ranks -1. While another trial holds the lock every rank polls together (no collective
    is left waiting on one rank for longer than poll_s)."""
    waited = False
    while True:
        fd, state = None, None
        if is_main:
            state = "cached" if cache.has(key) else None
            if state is None:
                fd = cache.try_lock(key)
                state = "busy" if fd is None else ("cached" if cache.has(key) else "train")
                if state == "cached":
                    cache.unlock(fd)
                    fd = None
        state = D.broadcast_object(state)
        if state == "cached":
            logger.info("%s cache hit for expert %s (%s)", what, name, key)
            return None
        if state == "train":
            return fd if is_main else -1
        if not waited:
            logger.info("%s %s for expert %s is being made by another trial: waiting", what, key, name)
            waited = True
        time.sleep(poll_s)


def _train_one(ctx: StageContext, cache: Stage1Cache, i: int, cfg, *, key: str, llm_spec, tok) -> Any:
    spec, env = ctx.spec, ctx.env
    hp = spec.train.stages["align_expert"]
    model = S.build_model([cfg.with_overrides(freeze=False)], "channel_concat", {}, spec.projector.type,
                          llm_spec=llm_spec, tokenizer=tok, seed=seed_for(spec, "align_expert"), dtype=ctx.dtype, engine=ctx.engine,
                          scratch=ctx.out / TD.FIRST_BUILD)
    S.freeze_for_stage(model, "align_expert", spec)
    job = StageJob(f"align_expert/{i}", "align_expert", model, S.param_groups(model, hp),
                   ctx.dataset(ctx.data.pretrain, S.PRETRAIN_TEMPLATE, tok),
                   S.make_collate(model, "align_expert", spec), hp, loader=S.loader_options(spec),
                   extra_metrics={"expert": cfg.name, "cache_key": key})
    res = ctx.train(job)
    expert = model.mixture.experts[0]
    state = whole_state(expert, is_main=env.is_main)  # the expert alone, one submodule gathered at a time
    if env.is_main:
        cache.commit(key, lambda d: expert.save_pretrained(d, state=state),
                     {"expert": cfg.name, "steps": res.steps, "first_loss": res.first_loss,
                      "last_loss": res.last_loss, "trial": spec.name,
                      "process_s": res.time_s * env.world_size, "world_size": env.world_size})
    D.barrier()
    ctx.free()
    return res


def run_align_expert(ctx: StageContext) -> dict[str, Any]:
    spec, env = ctx.spec, ctx.env
    cache = Stage1Cache(ctx.cache_dir)
    llm_spec = spec.train.align_llm or spec.llm
    tok = ctx.stage1_tokenizer()
    summary: dict[str, Any] = {"experts": {}, "steps": 0, "time_s": 0.0}
    samples = tokens = 0.0
    for i, cfg in enumerate(S.resolve_experts(spec, ctx.cache_dir)):
        key = ctx.stage1_key(cfg)
        fd = claim(cache, key, cfg.name, is_main=env.is_main)
        if fd is None:  # cached (by an earlier trial or one that trained it while we waited)
            made = cache.meta(key).get("process_s")  # entries made before the ledger do not say
            summary["experts"][cfg.name] = {"key": key, "cached": True, "steps": 0, "saved_process_s": made}
            continue
        try:
            res = _train_one(ctx, cache, i, cfg, key=key, llm_spec=llm_spec, tok=tok)
        finally:
            if fd >= 0:
                cache.unlock(fd)
        summary["experts"][cfg.name] = {"key": key, "cached": False, "steps": res.steps,
                                        "first_loss": res.first_loss, "last_loss": res.last_loss,
                                        "process_s": res.time_s * env.world_size}
        summary["steps"] += res.steps
        summary["time_s"] += res.time_s
        samples += res.samples_per_s * res.time_s
        tokens += res.tokens_per_s * res.time_s
    t = summary["time_s"]
    summary["samples_per_s"] = samples / t if t else 0.0
    summary["tokens_per_s"] = tokens / t if t else 0.0
    ctx.write_done("align_expert", summary)
    return summary
