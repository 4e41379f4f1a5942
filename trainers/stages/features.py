"""Stage 2 (align_projector) and SFT without the expert forwards: the experts are frozen in stage 2
(and in SFT when the trial freezes every expert there), so each expert's outputs over a stage's data
are computed once (trainers/caches/features.py) and every trial with that expert trains on them. The
batches, their order and the exact resume are the stage's own: only the images are replaced by the
experts' float16 outputs. The expert forwards of the loop are counted either way (forward hooks), so
a result says what ran."""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainers.training import distributed as D
from trainers.stages import recipes as S
from trainers.stages.context import StageContext
from trainers.training.loop import total_steps
from trainers.caches.features import (GB, FeatureCache, FeatureCacheError, FeatureEntry, entry_bytes, feature_key,
                                    records_digest, shard_rows)
from trainers.estimate.flops import flop_counter
from trainers.stages.pre_align import claim


logger = logging.getLogger(__name__)
FP16_MAX = 65504.0


class FeatureDataset(Dataset):
    """A stage's dataset items with each image replaced by the experts' cached outputs
    (float16 [T, sum of out_dims], under "image" so the collate batches them as it batches images)."""

    def __init__(self, base, entries: list[FeatureEntry]) -> None:
        self.base, self.entries = base, entries
        src = [e.sources() for e in entries]
        if any(len(s) != len(base) or not np.array_equal(s, src[0]) for s in src):
            raise FeatureCacheError(f"feature cache entries {[e.path.name for e in entries]} do not cover the "
                                    f"{len(base)} items of {base.path} in the same records")
        self.src = src[0]
        self.lengths, self.truncated, self.path = base.lengths, base.truncated, base.path

    @property
    def skipped(self):
        return self.base.skipped

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = self.base.text_item(int(self.src[index]))
        item["image"] = torch.from_numpy(np.concatenate([e.row(index) for e in self.entries], axis=-1))
        return item


def feature_collate(batch, inner):
    out = inner(batch)
    out["features"] = out.pop("images")
    out["images"] = None
    return out


class ForwardCounter:
    """Images the experts encode while installed (forward hooks)."""

    def __init__(self, experts) -> None:
        self.items = 0
        self.handles = [e.register_forward_hook(self._hook) for e in experts]

    def _hook(self, module, inputs, output) -> None:
        self.items += int(output.shape[0])

    def close(self) -> int:
        for h in self.handles:
            h.remove()
        return int(D.all_reduce_values([float(self.items)])[0])


def _compute(ctx: StageContext, model, j: int, dataset, *, cache: FeatureCache, key: str,
             stage1_key: str, stage: str) -> dict[str, Any]:
    """Every rank encodes its shard of the items with expert j and writes it; rank 0 publishes."""
    env, spec = ctx.env, ctx.spec
    expert = model.mixture.experts[j].to(env.device)
    rows = shard_rows(len(dataset), env.world_size, env.rank)
    if env.is_main:
        cache.begin(key)
    D.barrier()
    tmp = cache.staging(key)
    tokens = model.mixture.grid ** 2
    feats = np.lib.format.open_memmap(tmp / f"shard{env.rank}.npy", mode="w+", dtype=np.float16,
                                      shape=(len(rows), tokens, expert.out_dim))
    src = np.empty(len(rows), dtype=np.int64)
    bs = spec.train.stages[stage].micro_batch_size
    autocast = getattr(ctx.engine, "autocast", nullcontext())  # as the stage's forward runs
    flops, bad, t0 = None, "", time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(rows), bs):
            if bad:
                break
            loaded = [dataset.load(i) for i in rows[s:s + bs]]
            src[s:s + len(loaded)] = [r for r, _ in loaded]
            have = [k for k, (_, im) in enumerate(loaded) if im is not None]
            if not have:
                continue  # text-only items: zero rows, never read
            x = model.prepare_images(torch.stack([loaded[k][1] for k in have]).to(env.device))
            counter = flop_counter() if flops is None else nullcontext()  # counted once, on the first batch
            with counter, autocast:
                out = expert(x).float()
            if flops is None:
                flops = int(counter.get_total_flops()) // len(have)
            peak = float(out.abs().max())
            if not peak <= FP16_MAX:  # also NaN
                bad = f"expert {expert.config.name}: output magnitude {peak:g} does not fit float16"
            feats[[s + k for k in have]] = out.half().cpu().numpy()
    feats.flush()
    del feats
    if D.all_reduce_values([float(bool(bad))], op="max")[0]:  # every rank stops, none waits on a barrier
        raise FeatureCacheError(f"{bad or f'expert {expert.config.name}: an output on another rank does not fit float16'}"
                                " (train.feature_cache.enabled: false for this expert's trials)")
    np.save(tmp / f"src{env.rank}.npy", src)
    spent = D.all_reduce_values([time.perf_counter() - t0])[0]  # process-seconds over the ranks
    D.barrier()
    meta = {"expert": expert.config.name, "stage1_key": stage1_key, "items": len(dataset), "tokens": tokens,
            "dim": expert.out_dim, "world_size": env.world_size, "process_s": spent, "flops_per_item": flops or 0,
            "trial": spec.name, "stage": stage}
    if env.is_main:
        cache.publish(key, tmp, meta)
    D.barrier()
    return meta


def sft_uncached(spec, model) -> str | None:
    """Why SFT cannot read cached features (None when it can): an expert that trains there."""
    if spec.train.recipe != "eagle":
        return f"recipe {spec.train.recipe} (the cache keys on stage 1's experts)"
    trains = [e.config.name for e in model.mixture.experts if any(p.requires_grad for p in e.parameters())]
    return f"expert {', '.join(trains)} trains in sft" if trains else None


def prepare(ctx: StageContext, model, dataset, collate, stage: str = "align_projector") -> tuple[Any, Any, dict[str, Any]]:
    """The stage's dataset and collate on cached features (made here where missing) and what the
    cache did; unchanged (and an empty record) when train.feature_cache is off, unchanged with the
    reason under "off" when SFT trains an expert."""
    spec, env = ctx.spec, ctx.env
    fc = spec.train.feature_cache
    if not fc.enabled:
        return dataset, collate, {}
    if stage == "sft" and (why := sft_uncached(spec, model)):
        logger.info("feature cache: not in sft: %s", why)
        return dataset, collate, {"enabled": True, "off": why}
    cache = FeatureCache(ctx.cache_dir)
    cfgs = S.resolve_experts(spec)
    digest = records_digest(dataset)
    precision = "bf16" if ctx.bf16 else "fp32"
    data_id = {**ctx.data.identity, "image_folder": str(ctx.data.image_folder or "")}
    s1 = [ctx.stage1_key(c) for c in cfgs]
    keys = [feature_key(k, data_id, records=digest, image_size=ctx.data.image_size, precision=precision) for k in s1]
    tokens = model.mixture.grid ** 2
    sizes = [entry_bytes(len(dataset), tokens, e.out_dim) for e in model.mixture.experts]
    max_bytes = fc.max_gb * GB
    if sum(sizes) > max_bytes:
        raise FeatureCacheError(f"train.feature_cache.max_gb={fc.max_gb:g}: this trial's {len(sizes)} experts' features "
                                f"over {len(dataset)} items need {sum(sizes) / GB:.3g} GB")
    hp = spec.train.stages[stage]
    seen = total_steps(hp, len(dataset), stage) * hp.global_batch_size  # images the stage encodes
    info: dict[str, Any] = {"enabled": True, "experts": {}, "evicted": [], "max_gb": fc.max_gb}
    for j, (cfg, key, k1, size) in enumerate(zip(cfgs, keys, s1, sizes)):
        fd = claim(cache, key, cfg.name, is_main=env.is_main, what="feature")
        made = None
        if fd is not None:
            try:
                full = None
                if env.is_main:
                    try:
                        info["evicted"] += cache.make_room(size, max_bytes, keep=set(keys))
                    except FeatureCacheError as err:
                        full = str(err)
                full = D.broadcast_object(full)  # every rank fails alike
                if full:
                    raise FeatureCacheError(full)
                made = _compute(ctx, model, j, dataset, cache=cache, key=key, stage1_key=k1, stage=stage)
            finally:
                if fd >= 0:
                    cache.unlock(fd)
        meta = cache.meta(key)
        per_item_s = meta["process_s"] / max(1, meta["items"])
        computed = meta["items"] if made is not None else 0
        info["experts"][cfg.name] = {
            "key": key, "cached": made is None, "bytes": size, "items": meta["items"],
            "compute_process_s": meta["process_s"] if made is not None else 0.0,
            "forwards_saved": seen - computed, "saved_process_s": (seen - computed) * per_item_s,
            "saved_flops": (seen - computed) * int(meta.get("flops_per_item") or 0)}
    entries = [cache.open(k) for k in keys]
    info["bytes"] = sum(sizes)
    info["cache_bytes"] = cache.size_bytes() if env.is_main else None
    logger.info("feature cache (%s): %s; this trial's entries %.3f GB, the cache %.3f GB of %g GB", stage, ", ".join(
        f"{n} {'hit' if e['cached'] else 'made'}" for n, e in info["experts"].items()), info["bytes"] / GB,
        (info["cache_bytes"] or 0) / GB, fc.max_gb)
    return FeatureDataset(dataset, entries), partial(feature_collate, inner=collate), info
