"""Skilled init for the tiny experts: a short pre-training of each on its family's synthetic skill
(trainers/skills/tasks.py), computed once per machine and cached by a content hash of everything
that determines the weights (cache_dir/skills/<key>/{expert/, meta.json}), deterministic by seed.
Concurrent trials claim an entry with trainers.caches.claims.FileClaim: one trains, the others wait and reuse.
`probe` scores any expert on any skill with a fresh head on its frozen tokens (the per-skill table)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from trainers.caches.claims import FileClaim
from trainers.skills.tasks import FAMILY_SKILL, SKILLS, SkillData, SkillHead, augment, make_data

logger = logging.getLogger(__name__)

SKILL_CODE = ("experts", "trainers/skills", "trainers/data/synthetic_kinds.py", "trainers/data/synthetic_draw.py",
              "trainers/data/images.py", "trainers/data/prompts.py")
META = "meta.json"


@dataclass(frozen=True)
class SkillRecipe:
    steps: int = 400
    batch_size: int = 32
    lr: float = 2e-3
    n_train: int = 2048
    n_eval: int = 512
    image_size: int = 64  # the tiny studies' synthetic image size
    probe_steps: int = 400  # head-only training of `probe`
    # per-skill multiples of `steps`: each expert trains until it is clearly best at its own skill
    step_scale: tuple[tuple[str, float], ...] = (("caption", 3.0), ("classify", 2.0), ("mask", 2.0),
                                                    ("rotation", 2.0), ("read", 2.0), ("count", 2.0))

    def steps_for(self, skill: str) -> int:
        return max(1, round(self.steps * dict(self.step_scale).get(skill, 1.0)))


DEFAULT_RECIPE = SkillRecipe()


def skill_of(cfg, skill: bool | str = True) -> str:
    """The skill an expert entry pre-trains: a name as given, True its family's own."""
    if isinstance(skill, str):
        if skill not in SKILLS:
            raise ValueError(f"expert {cfg.name!r}: unknown skill {skill!r}; known: {', '.join(SKILLS)}")
        return skill
    if cfg.family not in FAMILY_SKILL:
        raise ValueError(f"expert {cfg.name!r}: no synthetic skill for family {cfg.family!r} "
                         f"(skills exist for {', '.join(FAMILY_SKILL)})")
    return FAMILY_SKILL[cfg.family]


@lru_cache(maxsize=1)
def _skill_code() -> str:
    from trainers.caches.stage1 import code_version

    return code_version(SKILL_CODE)


def skill_key(cfg, seed: int = 0, recipe: SkillRecipe | None = None, skill: bool | str = True) -> str:
    """sha256 over what determines the skilled weights: the expert's architecture (its random init
    included), the skill, the recipe, the seed and the skill code."""
    recipe = recipe or DEFAULT_RECIPE
    arch = cfg.model_dump(mode="json", exclude={"source", "pretrained", "freeze", "grad_checkpointing"})
    blob = {"expert": arch, "skill": skill_of(cfg, skill), "recipe": asdict(recipe), "seed": seed,
            "code": _skill_code()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:24]


def _floats(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def _batches(n: int, batch: int, steps: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos:pos + batch]
        pos += batch


def _cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate decayed to 0 by the last step: the final weights do not depend on the last batches' noise."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))


def _metric(head: SkillHead, feats: torch.Tensor, target: torch.Tensor, chunk: int = 32) -> float:
    """Mean metric over chunks of `chunk` items (in-batch retrieval needs a fixed batch)."""
    scores = [head.metric(head(feats[i:i + chunk]), target[i:i + chunk]) for i in range(0, len(feats) - chunk + 1, chunk)]
    return sum(scores) / len(scores)


def train_skill(cfg, seed: int = 0, recipe: SkillRecipe | None = None,
                skill: bool | str = True) -> tuple[Any, dict[str, Any]]:
    """Random-init expert `cfg` trained end to end with its skill head; returns (expert, stats)."""
    skill, recipe = skill_of(cfg, skill), recipe or DEFAULT_RECIPE
    with _one_thread():
        return _train(cfg, skill, seed, recipe)


@contextmanager
def _one_thread():
    """The same arithmetic whichever process runs it (and tiny ops are fastest on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(cfg, skill: str, seed: int, recipe: SkillRecipe) -> tuple[Any, dict[str, Any]]:
    import experts

    torch.manual_seed(seed)
    expert = experts.build_expert(cfg.with_overrides(pretrained=False, source=None))
    train = make_data(skill, recipe.n_train, seed, recipe.image_size, "train")
    held = make_data(skill, recipe.n_eval, seed, recipe.image_size, "eval")
    head = SkillHead(skill, expert.num_tokens, expert.out_dim)
    expert.set_trainable(True)
    expert.train()
    steps = recipe.steps_for(skill)
    opt = torch.optim.AdamW(list(expert.parameters()) + list(head.parameters()), lr=recipe.lr, weight_decay=0.0)
    sched = _cosine(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    losses, t0, c0 = [], time.time(), time.process_time()
    for idx in _batches(recipe.n_train, recipe.batch_size, steps, gen):
        images, target = augment(skill, train.images[idx], train.target[idx], gen)
        loss = head.loss(head(expert(_floats(images))), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    expert.eval()
    expert.set_trainable(False)
    with torch.no_grad():
        own = _metric(head, expert(_floats(held.images)), held.target)
    k = max(1, len(losses) // 10)
    stats = {"skill": skill, "expert": cfg.name, "steps": len(losses), "time_s": time.time() - t0,
             "cpu_s": time.process_time() - c0, "first_loss": sum(losses[:k]) / k, "last_loss": sum(losses[-k:]) / k,
             "metric_trained_head": own}
    logger.info("skill %s for %s: loss %.3f -> %.3f, held-out %.3f (%.0f s)", skill, cfg.name,
                stats["first_loss"], stats["last_loss"], own, stats["time_s"])
    return expert, stats


def probe(expert, skill: str, seed: int = 0, recipe: SkillRecipe | None = None,
          data: tuple[SkillData, SkillData] | None = None) -> float:
    """The held-out metric of a fresh head trained on `expert`'s frozen tokens for `skill`."""
    with _one_thread():
        return _probe(expert, skill, seed, recipe or DEFAULT_RECIPE, data)


def _probe(expert, skill: str, seed: int, recipe: SkillRecipe, data: tuple[SkillData, SkillData] | None) -> float:
    train, held = data or (make_data(skill, recipe.n_train, seed, recipe.image_size, "train"),
                           make_data(skill, recipe.n_eval, seed, recipe.image_size, "eval"))
    was_training = expert.training
    expert.eval()
    with torch.no_grad():
        f_train = torch.cat([expert(_floats(train.images[i:i + 128])) for i in range(0, len(train.images), 128)])
        f_held = expert(_floats(held.images))
    expert.train(was_training)
    torch.manual_seed(seed + 1)
    head = SkillHead(skill, f_train.shape[1], f_train.shape[2])
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr * 3, weight_decay=0.0)
    sched = _cosine(opt, recipe.probe_steps)
    gen = torch.Generator().manual_seed(seed + 1)
    for idx in _batches(len(f_train), recipe.batch_size, recipe.probe_steps, gen):
        loss = head.loss(head(f_train[idx]), train.target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return _metric(head, f_held, held.target)


class SkillCache:
    """cache_dir/skills/<key>/: the skilled expert (VisionExpert.save_pretrained) and meta.json."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir) / "skills"
        self.root.mkdir(parents=True, exist_ok=True)

    def expert_dir(self, key: str) -> Path:
        return self.root / key / "expert"

    def has(self, key: str) -> bool:
        return (self.root / key / META).is_file()

    def meta(self, key: str) -> dict[str, Any]:
        return json.loads((self.root / key / META).read_text())

    def _commit(self, key: str, expert, stats: dict[str, Any]) -> None:
        from trainers.caches.stage1 import file_identity

        tmp = self.root / f".tmp_{key}_{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        expert.save_pretrained(tmp / "expert")
        weights = file_identity(next((tmp / "expert").glob("*.safetensors")))["sha256"]
        (tmp / META).write_text(json.dumps({**stats, "key": key, "weights_sha256": weights}, indent=2))
        final = self.root / key
        if final.exists():  # an incomplete leftover (no meta): moved aside
            final.rename(self.root / f".stale_{key}_{os.getpid()}_{int(time.time())}")
        tmp.rename(final)

    def ensure(self, cfgs: list, seed: int = 0, recipe: SkillRecipe | None = None,
               poll_s: float = 0.5, skills: list[bool | str] | None = None) -> list[Path]:
        """The skilled expert dir of every config (its skill from `skills`, default its family's),
        training the missing ones. Entries another process is training are waited for after this
        one has trained what it could claim."""
        recipe = recipe or DEFAULT_RECIPE  # looked up at call time (tests shrink it)
        skills = skills if skills is not None else [True] * len(cfgs)
        keys = [skill_key(c, seed, recipe, sk) for c, sk in zip(cfgs, skills)]
        pending = {k: (c, sk) for k, c, sk in zip(keys, cfgs, skills) if not self.has(k)}
        waited = False
        while pending:
            progressed = False
            for key, (cfg, skill) in list(pending.items()):
                if self.has(key):
                    pending.pop(key)
                    continue
                claim = FileClaim(self.root / f"{key}.lock").acquire()
                if claim is None:
                    continue
                try:
                    if not self.has(key):  # finished by another process between the check and the claim
                        expert, stats = train_skill(cfg, seed, recipe, skill)
                        self._commit(key, expert, stats)
                finally:
                    claim.release()
                pending.pop(key)
                progressed = True
            if pending and not progressed:
                if not waited:
                    logger.info("skills %s are being trained by another process; waiting", ", ".join(pending))
                    waited = True
                time.sleep(poll_s)
        return [self.expert_dir(k) for k in keys]


def skill_weights(cfg) -> str | None:
    """The content hash of a skilled expert's weights (from its cache entry), None for any other."""
    if not cfg.source:
        return None
    meta = Path(cfg.source).parent / META
    if Path(cfg.source).name != "expert" or Path(cfg.source).parent.parent.name != "skills" or not meta.is_file():
        return None
    return json.loads(meta.read_text()).get("weights_sha256")


def skill_keys(spec) -> dict[str, str]:
    """Per skilled entry of a trial spec (by index), the key of its weights: a spec's identity covers
    the skilled weights it will start from, before they exist."""
    from trainers.expert_entries import resolve_expert
    return {str(i): skill_key(resolve_expert(e), spec.skill_seed, skill=e.skill)
            for i, e in enumerate(spec.experts) if e.skill}
