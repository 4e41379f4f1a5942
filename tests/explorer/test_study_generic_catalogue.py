"""The widened catalogue (letters G-L) and experts declared in YAML only (no preset)."""
from __future__ import annotations

import pytest
import torch
from test_study_fixtures import study_data, write_study

import experts
from experts.presets_generic import GENERIC_LETTERS
from explorer.study.trial_specs import build_trial_spec
from explorer.study.load import load_study
from search_spaces import load_search_space
from trainers.expert_entries import resolve_expert
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


def test_the_llm_axis_reaches_the_trial_and_splits_the_stage1_cache(tmp_path):
    from pathlib import Path

    from trainers.stages.recipes import TrialData, stage1_key_for

    root = Path(__file__).resolve().parents[2] / "studies"
    spec = load_study(root / "encoder_llm.yaml")
    data = TrialData(Path("p.json"), Path("s.json"), Path("s.json"), None, 448, {"files": "x"})
    keys = {}
    for source in spec.strategy.axes["llm.source"]:
        ts = build_trial_spec(spec, {"expert_A": True, "llm.source": source}, {"seed": 0, "experts": "A"},
                              number=0, cache_dir=tmp_path)
        assert ts.llm.source == source
        keys[source] = stage1_key_for(resolve_expert(ts.experts[0]), ts, data, bf16=True, tokenizer=None)
    assert len(set(keys.values())) == len(keys)  # one stage-1 pre-alignment per expert and LLM
    tiny = load_study(root / "tiny_encoder_llm.yaml")
    ts = build_trial_spec(tiny, {"expert_G": True, "llm.preset": "small-llama"}, {"seed": 0, "experts": "G"},
                          number=1, cache_dir=tmp_path)
    assert ts.llm.preset == "small-llama" and ts.experts[0].preset == "tiny-siglip2"


def test_the_mixed_catalogue_study_compresses_behind_sva(tmp_path):
    from pathlib import Path

    spec = load_study(Path(__file__).resolve().parents[2] / "studies" / "tiny_mixed_catalogue.yaml")
    params = {"expert_A": True, "expert_G": True, "expert_K": True, "fusion": "sva", "fusion.options.compress": "unshuffle"}
    ts = build_trial_spec(spec, params, {"seed": 0, "experts": "A+G+K"}, number=0, cache_dir=tmp_path)
    assert [e.preset for e in ts.experts] == ["tiny-clip", "tiny-siglip2", "tiny-radio"]
    siglip2 = resolve_expert(ts.experts[1])
    assert (siglip2.highres, siglip2.max_tiles) == ("dynamic", 4)  # per-preset base-trial settings carry over
    mix = experts.build_mixture([resolve_expert(e) for e in ts.experts], ts.fusion.name, ts.fusion.options)
    assert mix.num_tokens == 4 and mix(torch.rand(1, 3, 128, 128)).shape == (1, 4, mix.out_dim)


def test_the_sva_layers_study_reaggregates_at_both_llm_layers(tmp_path):
    from pathlib import Path

    from trainers.validate import validate_spec
    spec = load_study(Path(__file__).resolve().parents[2] / "studies" / "tiny_sva_layers.yaml")
    params = {"expert_A": True, "expert_B": True, "expert_G": True, "fusion": "sva", "fusion.options.compress": "unshuffle"}
    ts = build_trial_spec(spec, params, {"seed": 0, "experts": "A+B+G"}, number=0, cache_dir=tmp_path)
    assert ts.fusion.options == {"llm_layers": [0, 1], "compress": "unshuffle"}
    validate_spec(ts, "trial", 1)  # layers 0 and 1 exist in the tiny LLaMA; 2x2 tokens over 4x4 windows
