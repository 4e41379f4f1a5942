"""Sizes of every preset (parameters, tokens, width), built on the meta device (no weights, no
downloads). `python -m experts.describe` writes the table as markdown."""
from __future__ import annotations

import sys
from typing import Any

import torch

from experts.base import VisionExpert
from experts.config import ExpertConfig
from experts.presets import PRESETS
from experts.registry import build_expert


def build_on_meta(cfg: ExpertConfig | str) -> VisionExpert:
    """The expert (a preset name or a config) with its architecture on the meta device: shapes and
    parameter counts without weights, downloads or memory (pretrained is ignored)."""
    cfg = PRESETS[cfg] if isinstance(cfg, str) else cfg
    with torch.device("meta"):
        return build_expert(cfg.with_overrides(pretrained=False))


def describe_preset(name: str) -> dict[str, Any]:
    cfg = PRESETS[name]
    expert = build_on_meta(cfg)
    return {
        "preset": name, "letter": cfg.letter, "family": cfg.family, "source": cfg.source,
        "params": sum(p.numel() for p in expert.backbone.parameters()),
        "native": cfg.native_size, "input": cfg.input_size, "feature_grid": expert.feature_grid, "align": cfg.align,
        "tokens": expert.num_tokens, "width": expert.out_dim,
    }


def describe_all() -> list[dict[str, Any]]:
    return [describe_preset(n) for n in PRESETS]


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| preset | letter | family | params | input | feature grid | align | tokens | width |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["params"]
        size = f"{p / 1e6:.1f}M" if p >= 1e6 else f"{p / 1e3:.1f}K"
        lines.append(f"| {r['preset']} | {r['letter']} | {r['family']} | {size} | {r['input']} | "
                     f"{r['feature_grid']}x{r['feature_grid']} | {r['align']} | {r['tokens']} | {r['width']} |")
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(markdown(describe_all()) + "\n")


if __name__ == "__main__":
    main()
