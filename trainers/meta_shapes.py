"""What an expert and a fusion return, from a forward pass on the meta device (no weights, no
compute), cached per configuration: the pre-flight, the spec validation and the MLflow run fields
all ask for the same shapes."""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from functools import lru_cache


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """A pre-flight build is not the trial's: its per-module log lines would only be noise."""
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


@lru_cache(maxsize=256)
def meta_expert_shape(cfg_json: str) -> tuple[int, int]:
    """(grid, width) of an expert's output tokens, from a forward pass on the meta device."""
    import torch

    import experts

    cfg = experts.ExpertConfig.model_validate_json(cfg_json)
    with _quiet("experts"), torch.device("meta"):
        expert = experts.build_expert(cfg)
        out = expert(torch.empty(1, 3, cfg.input_size, cfg.input_size))
    if tuple(out.shape) != (1, cfg.grid ** 2, expert.out_dim):
        raise ValueError(f"expert {cfg.name!r}: returns {tuple(out.shape[1:])} tokens x width, "
                         f"expected ({cfg.grid ** 2}, {expert.out_dim})")
    return cfg.grid, expert.out_dim


@lru_cache(maxsize=256)
def meta_fusion_shape(name: str, widths: tuple[int, ...], num_tokens: int, options_json: str) -> tuple[int, int]:
    """(tokens, width) the fusion returns for these experts, from a forward pass on the meta device."""
    import torch

    import experts

    with torch.device("meta"):
        fusion = experts.build_fusion(name, list(widths), num_tokens, **json.loads(options_json))
        out = fusion([torch.empty(1, num_tokens, w) for w in widths])
    if tuple(out.shape[1:]) != (fusion.out_tokens, fusion.out_dim):
        raise ValueError(f"fusion {name!r}: returns {tuple(out.shape[1:])}, expected "
                         f"({fusion.out_tokens}, {fusion.out_dim})")
    return fusion.out_tokens, fusion.out_dim
