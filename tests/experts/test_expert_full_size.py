"""The full-size presets, built on the meta device (no weights): tokens and widths as DESIGN.md."""
from __future__ import annotations

import pytest
import torch

import experts

# DESIGN.md: every expert brought to 32x32 = 1024 tokens; input and alignment per letter.
DESIGN = {  # letter: (preset, input, alignment, feature grid, width)
    "A": ("clip-l-448", 448, "none", 32, 1024),
    "B": ("convnext-xxl-1024", 1024, "none", 32, 3072),
    "C": ("sam-l-1024", 1024, "unshuffle", 64, 1024),
    "D": ("dinov2-l-448", 448, "none", 32, 1024),
    "E": ("pix2struct-l-1024", 1024, "resize", 64, 1536),
    "F": ("eva02-l-1024", 1024, "resize", 64, 1024),
}


@pytest.mark.parametrize("letter", list(DESIGN))
def test_full_size_preset_matches_design(letter):
    name, size, align, feat, width = DESIGN[letter]
    assert experts.LETTERS[letter][0] == name
    cfg = experts.get_preset(name)
    assert (cfg.input_size, cfg.align, cfg.grid) == (size, align, 32)
    with torch.device("meta"):
        e = experts.build_expert(cfg.with_overrides(pretrained=False))
        out = e(torch.empty(1, 3, 512, 512))
    assert (e.feature_grid, e.num_tokens, e.out_dim) == (feat, 1024, width)
    assert out.shape == (1, 1024, width)
    assert sum(p.numel() for p in e.backbone.parameters()) > 250e6  # ViT-L class or larger


def test_describe_lists_every_preset():
    from experts.describe import describe_preset, markdown

    row = describe_preset("tiny-sam")
    assert (row["tokens"], row["width"], row["feature_grid"]) == (16, 64, 8)
    assert row["params"] == sum(p.numel() for p in experts.build_expert("tiny-sam").backbone.parameters())
    assert "| tiny-sam | C | sam |" in markdown([row])
