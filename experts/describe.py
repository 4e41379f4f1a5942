"""Sizes of every preset (parameters, tokens, width), built on the meta device (no weights, no
downloads). `python -m experts.describe` writes the table as markdown."""
from __future__ import annotations

import sys
from typing import Any

import torch

from experts.presets import PRESETS
from experts.registry import build_expert


def describe_preset(name: str) -> dict[str, Any]:
    cfg = PRESETS[name].with_overrides(pretrained=False)
    with torch.device("meta"):
        expert = build_expert(cfg)
    return {
        "preset": name, "letter": cfg.letter, "family": cfg.family,
        "params": sum(p.numel() for p in expert.backbone.parameters()),
        "input": cfg.input_size, "feature_grid": expert.feature_grid, "align": cfg.align,
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
