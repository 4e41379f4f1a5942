"""The parts of a stage's model with no weights on disk yet (an expert's random init or first read of
its hub weights, the fusion, a preset LLM), built through Engine.first_build: under ZeRO-3 rank 0
builds each whole, exactly as DDP would, and every rank reads its own range from rank 0's copy
(trainers/training/zero.py), so no other rank holds the part whole."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import experts
from experts.loading import SafetensorsState
from trainers.modeling.llm import build_llm, finish_llm
from trainers.modeling.partitions import load_state, read_llm
from trainers.modeling.saving import save_llm, save_part
from trainers.spec import LLMSpec

FUSION_FILE = "fusion.safetensors"


def _once(engine, make: Callable[[], nn.Module], write, read, scratch: Path | None) -> nn.Module:
    return make() if engine is None else engine.first_build(make, write, read, scratch)


def expert(engine, scratch: Path | None, cfg, dtype: torch.dtype) -> nn.Module:
    return _once(engine, lambda: experts.build_expert(cfg, dtype), lambda m, d: m.save_pretrained(d),
                 lambda d: experts.load_expert(d, load_state, dtype), scratch)


def mixture(engine, scratch: Path | None, mods: list[nn.Module], fusion_name: str, options: dict,
            dtype: torch.dtype) -> nn.Module:
    def make():
        return experts.VisionMixture(mods, fusion_name, options).to(dtype)

    def read(d: Path):
        mix = make()
        if (d / FUSION_FILE).is_file():  # a fusion without weights writes none
            load_state(mix.fusion, SafetensorsState(d / FUSION_FILE, dtype=dtype))
        return mix

    return _once(engine, make, lambda m, d: save_part(m.fusion, d / FUSION_FILE, is_main=True), read, scratch)


def preset_llm(engine, scratch: Path | None, spec: LLMSpec, tokenizer, seed: int, dtype: torch.dtype) -> nn.Module:
    def read(d: Path):
        model = read_llm(d, dtype=dtype, attn_implementation=spec.attn_implementation)
        if model is None:
            raise RuntimeError(f"{d}: the preset LLM written there does not read back by name")
        return finish_llm(model, spec, tokenizer)

    return _once(engine, lambda: build_llm(spec, tokenizer, seed, dtype=dtype),
                 lambda m, d: save_llm(m, d, is_main=True), read, scratch)
