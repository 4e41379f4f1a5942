"""Every resolution recipe of the CLIP ablation yields a trial whose expert builds and gives the
paper's token count (grid grows with resolution: 576 / 1024 / 2304 tokens at full scale)."""
from pathlib import Path

import pytest
import torch

import experts
from explorer.study.trial_specs import build_trial_data
from explorer.study.load import load_study
from trainers.spec import parse_trial_spec
from trainers.stages.recipes import resolve_experts

ROOT = Path(__file__).resolve().parents[2]
TINY_GRID = {"original": 3, "interpolate_448": 4, "interpolate_672": 6, "tiled_672": 6, "dynamic_672": 3}


@pytest.mark.parametrize("recipe", sorted(TINY_GRID))
def test_tiny_resolution_recipe_builds_with_its_grid(recipe, tmp_path):
    study = load_study(ROOT / "studies" / "tiny_resolution.yaml")
    params = {"expert_A": True, "resolution": recipe, "freeze": "unfreeze"}
    data = build_trial_data(study, params, {"experts": "A"}, number=0, cache_dir=tmp_path)
    spec = parse_trial_spec(data, recipe)
    (cfg,) = resolve_experts(spec)
    assert cfg.grid == TINY_GRID[recipe] and cfg.freeze is False
    if recipe == "dynamic_672":  # up to 4 tiles and a thumbnail, side by side in each token
        assert cfg.highres == "dynamic" and cfg.max_tiles == 4
    expert = experts.build_expert(cfg).eval()
    with torch.no_grad():
        out = expert(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, TINY_GRID[recipe] ** 2, expert.out_dim)


@pytest.mark.parametrize("recipe,tokens", [("original", 576), ("interpolate_448", 1024),
                                           ("interpolate_672", 2304), ("tiled_672", 2304), ("dynamic_672", 576)])
def test_full_resolution_recipes_give_the_papers_token_counts(recipe, tokens, tmp_path):
    study = load_study(ROOT / "studies" / "clip_resolution.yaml")
    params = {"expert_A": True, "resolution": recipe, "freeze": "unfreeze"}
    data = build_trial_data(study, params, {"experts": "A"}, number=0, cache_dir=tmp_path)
    (cfg,) = resolve_experts(parse_trial_spec(data, recipe))
    assert cfg.grid ** 2 == tokens
