"""The pre-screen's inputs: each expert's tokens on the first N images of a trial's SFT data, the
experts as the trial starts them (skilled init trained into the cache when missing), with no
projector and no LLM, and what each image's item asks (kind, answer)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainers.data.images import load_image


@dataclass
class ProbeItems:
    images: torch.Tensor  # uint8 [N, 3, S, S], as the trial's loader gives them
    kinds: list[str | None]  # the synthetic record's kind (None for other data)
    answers: list[str]  # the answer's content: for multiple choice the correct option, not its letter


@dataclass
class ExpertFeatures:
    tokens: dict[str, torch.Tensor]  # expert letter (or name) -> float32 [N, tokens, width]
    items: ProbeItems
    seconds: dict[str, float] = field(default_factory=dict)


def expert_label(cfg) -> str:
    return cfg.letter or cfg.name


def _answer(raw: dict) -> str:
    answer = raw["conversations"][1]["value"].strip()
    options = raw.get("options")
    if options and len(answer) == 1 and answer.isalpha():  # a letter stands for an option: its content follows the image
        index = ord(answer.upper()) - ord("A")
        if 0 <= index < len(options):
            return str(options[index])
    return answer


def read_items(sft: str | Path, image_folder: str | Path | None, image_size: int, n: int) -> ProbeItems:
    """The first `n` image records of the SFT file (read raw: the synthetic writer's `kind` and
    `options` are not part of the LLaVA record)."""
    raw = [r for r in json.loads(Path(sft).read_text(encoding="utf-8")) if r.get("image")][:n]
    folder = Path(image_folder) if image_folder is not None else Path(sft).parent
    images = torch.stack([load_image(folder / r["image"], image_size) for r in raw])
    return ProbeItems(images, [r.get("kind") for r in raw], [_answer(r) for r in raw])


@torch.no_grad()
def expert_tokens(expert, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """[N, tokens, width] float32 of a frozen expert on uint8 images (divided by 255 as the model does)."""
    expert.eval()
    out = [expert(images[i:i + batch_size].float().div_(255.0)).float() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def extract(spec, cache_dir: str | Path, n_images: int = 512, batch_size: int = 128) -> ExpertFeatures:
    """Tokens of every expert of trial `spec` on its first `n_images` SFT images. Skilled experts
    missing from cache_dir/skills and synthetic data missing from cache_dir/synthetic are made first
    (their seconds are kept apart from the pre-screen's own)."""
    import experts
    from trainers.stages.recipes import resolve_data, resolve_experts

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    cfgs = resolve_experts(spec, cache_dir)
    seconds["skills_s"] = time.perf_counter() - t
    t = time.perf_counter()
    data = resolve_data(spec, cache_dir)
    seconds["data_s"] = time.perf_counter() - t
    t = time.perf_counter()
    items = read_items(data.sft, data.image_folder, data.image_size, n_images)
    seconds["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tokens = {}
    for cfg in cfgs:
        with torch.random.fork_rng():  # a random-init expert draws the same init whatever ran before
            torch.manual_seed(spec.seed)
            expert = experts.build_expert(cfg)
        tokens[expert_label(cfg)] = expert_tokens(expert, items.images, batch_size)
    seconds["features_s"] = time.perf_counter() - t
    return ExpertFeatures(tokens, items, seconds)
