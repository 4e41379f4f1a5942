"""Grid ablations: every point of the table runs once (per seed), with the right trial spec."""
from __future__ import annotations

import itertools

import pytest
import yaml
from optuna.trial import TrialState

from explorer.controller import run_study
from explorer.study.storage import default_storage_url, open_study
from explorer.study.load import parse_study
from test_study_fixtures import study_data


def test_grid_covers_every_point_once_with_its_trial_spec(tmp_path):
    axes = {"resolution": ["original", "interpolate_448", "interpolate_672", "tiled_672"],
            "freeze": ["frozen", "unfreeze"]}
    seen = []

    def runner(job):
        spec = yaml.safe_load(open(job.spec_path))
        clip = spec["experts"][0]
        seen.append((job.params["resolution"], job.params["freeze"], clip["input_size"], clip["highres"],
                     clip["freeze"]))
        # a made-up table: interpolate 448 + unfreeze is best, as in the paper
        return {"objective": 600.0 + (45 if job.params["resolution"] == "interpolate_448" else 0)
                + (2 if job.params["freeze"] == "unfreeze" else 0)}

    spec = parse_study(study_data("res", {"type": "grid", "experts": ["A"], "axes": axes}), "res.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    trials = open_study(spec, default_storage_url(tmp_path)).get_trials()
    assert outcome.finished and len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    points = {(t.params["resolution"], t.params["freeze"]) for t in trials}
    assert points == set(itertools.product(axes["resolution"], axes["freeze"]))
    sizes = {"original": 48, "interpolate_448": 64, "interpolate_672": 96, "tiled_672": 96}
    for res, frz, size, highres, frozen in seen:
        assert size == sizes[res] and highres == ("tiled" if res == "tiled_672" else "interpolate")
        assert frozen == (frz == "frozen")
    assert outcome.best_params["resolution"] == "interpolate_448" and outcome.best_params["freeze"] == "unfreeze"
    assert outcome.best_value == pytest.approx(647.0)


def test_grid_over_fusion_expert_sets_and_a_hyper_parameter(tmp_path):
    axes = {"fusion": ["sequence_append", "channel_concat"], "experts": ["A", "A+B"],
            "train.stages.sft.lr": [1e-4, 1e-3]}
    got = []

    def runner(job):
        spec = yaml.safe_load(open(job.spec_path))
        got.append((spec["fusion"]["name"], len(spec["experts"]), spec["train"]["stages"]["sft"]["lr"]))
        return {"objective": float(len(got))}

    strategy = {"type": "grid", "experts": ["A"], "axes": axes, "repeats": 2}
    spec = parse_study(study_data("fx", strategy, resources={"max_concurrent_trials": 2}), "fx.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    assert outcome.finished and outcome.n_complete == 16
    assert sorted(set(got)) == sorted(itertools.product(["channel_concat", "sequence_append"], [1, 2], [1e-4, 1e-3]))
    assert all(got.count(g) == 2 for g in set(got))  # two seeds per point
    cands = outcome.path[0]["candidates"]
    assert len(cands) == 8 and all(c["n"] == 2 for c in cands)
