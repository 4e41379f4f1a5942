"""Sampler (TPE) search over hyper-parameters around a fixed mixture."""
from __future__ import annotations

import math

import yaml
from optuna.trial import TrialState

from explorer.controller import run_study
from explorer.study.storage import default_storage_url, open_study
from explorer.strategies.base import trial_params
from explorer.study.load import parse_study
from test_study_fixtures import study_data


def _objective(lr: float, warmup: float) -> float:
    return -((math.log10(lr) + 3.0) ** 2) - warmup  # best near lr = 1e-3


def test_tpe_runs_n_trials_with_params_in_range(tmp_path):
    def runner(job):
        spec = yaml.safe_load(open(job.spec_path))
        lr, warm = spec["train"]["stages"]["sft"]["lr"], spec["train"]["stages"]["sft"]["warmup_ratio"]
        assert lr == job.params["train.stages.sft.lr"] and [e["preset"] for e in spec["experts"]] == ["tiny-clip", "tiny-convnext"]
        return {"objective": _objective(lr, warm)}

    strategy = {"type": "tpe", "experts": ["A", "B"], "hparams": ["train.stages.sft.lr", "train.stages.sft.warmup_ratio"],
                "sampler_options": {"n_startup_trials": 4}}
    spec = parse_study(study_data("tpe", strategy, budget={"max_trials": 12}), "tpe.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    trials = open_study(spec, default_storage_url(tmp_path)).get_trials()
    assert outcome.finished and len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert 1e-4 <= t.params["train.stages.sft.lr"] <= 3e-3
        assert 0.0 <= t.params["train.stages.sft.warmup_ratio"] <= 0.1
        fixed = trial_params(t)
        assert fixed["expert_A"] and fixed["expert_B"] and not fixed["expert_C"] and "expert_A" not in t.params
    assert len({t.params["train.stages.sft.lr"] for t in trials}) == 12
    assert outcome.best_value == max(t.value for t in trials)
    assert outcome.best_params["train.stages.sft.lr"] == max(trials, key=lambda t: t.value).params["train.stages.sft.lr"]


def test_a_failed_tpe_slot_is_retried_with_the_same_params(tmp_path):
    failed = []

    def runner(job):
        if job.number == 1:
            failed.append(dict(job.params))
            raise RuntimeError("out of memory")
        return {"objective": 1.0}

    strategy = {"type": "tpe", "experts": ["A"], "sampler": "random"}
    spec = parse_study(study_data("tpe2", strategy, budget={"max_trials": 3}, retries=1), "tpe2.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    trials = open_study(spec, default_storage_url(tmp_path)).get_trials()
    assert outcome.finished and outcome.n_complete == 3 and len(trials) == 4
    retry = [t for t in trials if t.user_attrs["key"] == trials[1].user_attrs["key"]]
    assert [t.state for t in retry] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trial_params(retry[1]) == failed[0]
