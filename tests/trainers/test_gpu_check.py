"""The GPU check's CPU-checkable parts: it refuses cleanly without CUDA, its tiny trial specs are
valid for every strategy on 1 and 2 processes, result.json checks catch what they should, and the
full-size benchmark configuration builds and fits one H200 by the estimate."""
from __future__ import annotations

import pytest
import torch

from benchmarks import full_size_throughput, gpu_check

GOOD = {"scores": {}, "objective": 3.1, "objective_name": "heldout_loss", "heldout_loss": 3.1,
        "stage_time_s": {"sft": 1.0}, "throughput": {"sft": {"samples_per_s": 1.0, "tokens_per_s": 9.0}},
        "peak_memory_mb": 512.0, "steps": {"sft": 32}, "world_size": 2, "strategy": "ddp", "precision": "bf16",
        "loss": {"align_projector": {"first": 6.0, "last": 4.0}, "sft": {"first": 5.0, "last": 3.0}}}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_refuses_without_cuda(capsys):
    assert gpu_check.main([]) == 2
    err = capsys.readouterr()
    assert err.out == "" and err.err.strip().splitlines() == [
        "gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine, or --rehearse-on-cpu"]
    assert full_size_throughput.main([]) == 2


@pytest.mark.parametrize("strategy", gpu_check.STRATEGIES)
def test_tiny_specs_are_valid_on_one_and_two_processes(strategy, tmp_path):
    from trainers.training.loop import accumulation_steps
    from trainers.spec import RECIPE_STAGES, parse_trial_spec

    spec = parse_trial_spec(gpu_check.tiny_gpu_spec(strategy, tmp_path))
    assert (spec.train.strategy, spec.train.precision) == (strategy, "bf16")
    for stage in RECIPE_STAGES[spec.train.recipe]:
        hp = spec.train.stages[stage]
        assert accumulation_steps(hp, 1) == 2 and accumulation_steps(hp, 2) == 1


def test_result_checks():
    assert gpu_check.check_result(GOOD, 2) == []
    bad = {**GOOD, "loss": {"sft": {"first": 3.0, "last": 3.5}}, "precision": "fp32"}
    del bad["throughput"]
    problems = gpu_check.check_result(bad, 1)
    assert "result.json lacks throughput" in problems and "world_size 2 != 1" in problems
    assert "precision fp32 (bf16 expected)" in problems
    assert any(p.startswith("sft: loss did not fall") for p in problems)


@pytest.mark.slow
def test_full_size_config_builds_and_fits_an_h200(tmp_path, monkeypatch):
    monkeypatch.setenv("EAGLE_PLAN_CACHE", str(tmp_path / "profiles.json"))
    spec, est = full_size_throughput.choose(139.0)
    assert spec.llm.preset == "bench-7b"
    assert [e.preset for e in spec.experts] == list(full_size_throughput.MIXTURE)
    for stage, row in est.items():
        assert 0 < row["peak_memory_gb"] <= full_size_throughput.MEMORY_FRACTION * 139.0, (stage, row)
        assert spec.train.stages[stage].micro_batch_size >= 1
    assert est["sft"]["trainable_params"] > 6.7e9  # the 7B-shaped LLM is trained in SFT


@pytest.mark.slow
def test_full_size_loop_runs_with_tiny_presets():
    doc = full_size_throughput.benchmark(tiny=True, steps=1)
    for stage, row in doc["stages"].items():
        assert row["flops_per_step"] > 0 and row["tokens_per_s_per_gpu"] > 0, stage
    assert doc["stages"]["sft"]["tokens_per_sample"] == 512 + 16
