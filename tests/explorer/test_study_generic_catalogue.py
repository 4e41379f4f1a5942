"""The widened catalogue (letters G-L) and experts declared in YAML only (no preset)."""
from __future__ import annotations

import pytest
import torch
from test_study_fixtures import study_data, write_study

import experts
from experts.presets_generic import GENERIC_LETTERS
from explorer.overrides import build_trial_spec
from explorer.study import load_study
from search_spaces import load_search_space
from trainers.stages import resolve_expert

TIMM_VIT = {"family": "timm", "arch": {"model_name": "vit_base_patch16_224", "img_size": 64, "embed_dim": 32,
                                       "depth": 2, "num_heads": 2},
            "native_size": 64, "input_size": 64, "hidden_size": 32, "grid": 4, "mean": None, "std": None}


def test_eagle_plus_adds_the_new_letters_on_both_scales():
    for scale, idx in (("full", 0), ("tiny", 1)):
        space = load_search_space("eagle_plus" if scale == "full" else "eagle_plus_tiny")
        assert space.letters == list("ABCDEFGHIJKL")
        for letter, pair in (experts.LETTERS | GENERIC_LETTERS).items():
            assert space.preset(letter) == pair[idx]
            assert experts.get_preset(pair[idx]).letter == letter


def test_a_catalogue_letter_declared_inline_reaches_a_working_expert(tmp_path):
    space = {"extends": "eagle_plus_tiny", "experts": {
        "A": {"name": "CLIP", "family": "clip", "full": "clip-l-448", "tiny": "tiny-clip"},
        "M": {"name": "my timm ViT", "family": "timm", "full": "my-vit", "tiny": "my-vit-tiny",
              "define": {"tiny": TIMM_VIT}}}}
    spec = load_study(write_study(tmp_path, study_data("inline", {"type": "greedy", "base": ["A"]},
                                                       search_space=space)))
    ts = build_trial_spec(spec, {"expert_A": True, "expert_M": True}, {"seed": 0, "experts": "A+M"}, number=0,
                          cache_dir=tmp_path / "c")
    cfg = resolve_expert(ts.experts[1])
    assert (cfg.name, cfg.family, cfg.mean) == ("my-vit-tiny", "timm", None)
    e = experts.build_expert(cfg)
    assert e.config.mean == (0.5, 0.5, 0.5) and e(torch.rand(1, 3, 64, 64)).shape == (1, 16, 32)


def test_a_bad_inline_declaration_names_the_field():
    from trainers.spec import ExpertEntry

    with pytest.raises(experts.ExpertConfigError, match="expert 'mine': hidden_size"):
        resolve_expert(ExpertEntry(preset="mine", define=dict(TIMM_VIT, hidden_size=0)))
