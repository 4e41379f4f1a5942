"""Whole trials through the launcher and torchrun (gloo on CPU): both recipes on 2 processes,
DeepSpeed ZeRO-2/3, kill + resume, the stage-1 cache across trials, the shipped tiny.yaml."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.trainers.helpers_eagle import TINY_YAML, tiny_spec_dict, write_spec
from trainers.launch import prepare_trial, run_trial, torchrun_command
from trainers.training.metrics import METRIC_KEYS, read_metrics
from trainers.spec import RECIPE_STAGES

pytestmark = pytest.mark.slow
RESULT_KEYS = {"scores", "objective", "objective_name", "scorer_profile", "heldout_loss", "stage_time_s",
               "throughput", "peak_memory_mb", "steps", "world_size"}


def _check_complete(out: Path, result: dict, recipe: str, world: int, evaluated: bool = False) -> list[dict]:
    assert RESULT_KEYS <= set(result) and result["world_size"] == world
    assert 0 < result["heldout_loss"] < 10
    if not evaluated:
        assert result["objective_name"] == "heldout_loss" and result["direction"] == "minimize"
        assert result["objective"] == result["heldout_loss"] and result["scores"] == {}
    assert json.loads((out / "result.json").read_text()) == result
    assert (out / "trial.yaml").is_file() and (out / "logs" / "rank0.log").is_file()
    stages = RECIPE_STAGES[recipe]
    assert set(result["steps"]) == set(stages) and result["peak_memory_mb"] > 100
    # counted, reported cuts to llm.max_length (none in these specs; counting: test_data_llava)
    assert result["truncated_records"] == {s: 0 for s in stages if s != "align_expert"}
    metrics = read_metrics(out / "metrics.jsonl")
    for stage in stages:
        lines = [m for m in metrics if m["stage"] == stage]  # eval lines carry scores, not losses
        assert lines and all(set(METRIC_KEYS) <= set(m) and isinstance(m["lr"], float) for m in lines)
        if stage != "align_expert":  # align_expert runs once per expert (its own step counters)
            assert [m["step"] for m in lines] == list(range(1, result["steps"][stage] + 1))
        assert result["throughput"][stage]["samples_per_s"] > 0 and result["stage_time_s"][stage] > 0
    return metrics


def _falls(metrics: list[dict], stage: str, k: int = 4) -> tuple[float, float]:
    losses = [m["loss"] for m in metrics if m["stage"] == stage]
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


@pytest.mark.parametrize("recipe", ["baseline", "eagle"])
def test_two_process_trial_runs_every_stage_and_learns(tmp_path, recipe):
    d = tiny_spec_dict(recipe=recipe)
    d["train"]["stages"]["pretrain"] = dict(d["train"]["stages"]["align_projector"])
    d["train"]["stages"]["sft"].update(epochs=3)
    if recipe == "eagle":  # activation checkpointing in the LLM and in an expert, under DDP
        d["llm"]["grad_checkpointing"] = True
        d["experts"][0]["grad_checkpointing"] = True
    evaluated = recipe == "baseline"
    if evaluated:  # the evaluation package fills the scores and the objective
        d["eval"] = {"benchmarks": ["gqa", "pope"], "limit": 8, "batch_size": 4, "max_new_tokens": 4}
    out = tmp_path / "trial"
    result = run_trial(write_spec(d, tmp_path / "t.yaml"), out, nproc=2)
    metrics = _check_complete(out, result, recipe, 2, evaluated)
    if evaluated:
        assert {"gqa", "pope"} <= set(result["scores"]) and result["objective_name"] == "avg"
        assert result["scorer_profile"] == "official"
        assert result["direction"] == "maximize" and result["objective"] is not None
        assert (out / "predictions" / "gqa.jsonl").is_file()
        assert [m["gqa"] for m in metrics if m["stage"] == "eval"] == [result["scores"]["gqa"]]
    first, last = _falls(metrics, "sft")
    assert last < first - 0.3, (first, last)
    lrs = [m["lr_groups"] for m in metrics if m["stage"] == "sft"]
    assert set(lrs[-1]) == {"llm", "projector"}  # both tiny experts are frozen in SFT by their presets
    log = (out / "logs" / "rank0.log").read_text()
    assert "[sft] llm: trainable" in log and "frozen" in log
    if recipe == "eagle":
        experts_seen = {m["expert"] for m in metrics if m["stage"] == "align_expert"}
        assert experts_seen == {"tiny-clip", "tiny-convnext"}
        assert result["steps"]["align_expert"] == 2 * 8


@pytest.mark.parametrize("strategy", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_trial(tmp_path, strategy):
    d = tiny_spec_dict(strategy=strategy, checkpoint_every=4)
    for st in d["train"]["stages"].values():
        st["max_steps"] = 3
    d["train"]["stages"]["sft"].update(max_steps=6, lr_projector=3e-3)
    out = tmp_path / "trial"
    result = run_trial(write_spec(d, tmp_path / "t.yaml"), out, nproc=2)
    metrics = _check_complete(out, result, "eagle", 2)
    assert result["steps"] == {"align_expert": 6, "align_projector": 3, "sft": 6}
    sft = [m for m in metrics if m["stage"] == "sft"]
    assert sft[-1]["loss"] < sft[0]["loss"]
    assert sft[0]["lr_groups"]["projector"] > sft[0]["lr_groups"]["llm"] > 0  # the spec's groups reached DeepSpeed's optimizer
    ckpt = out / "checkpoints" / "sft" / "step_0000004"  # DeepSpeed's own checkpoint format, marked complete
    assert (ckpt / "COMPLETE").is_file() and any(ckpt.glob("*optim_states.pt"))
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    import torch

    saved = torch.load(next(ckpt.glob("*model_states.pt")), map_location="cpu", weights_only=False)["module"]
    assert any(k.startswith("llm.") for k in saved)  # SFT trains the LLM ...
    assert not any(k.startswith("mixture.experts.") for k in saved)  # ... the frozen experts are left out
    # saved weights are whole (ZeRO-3 partitions them; saving gathers first): they load back
    from experts import load_expert
    from trainers.modeling.eagle import EagleModel

    model = EagleModel.from_pretrained(out / "stages" / "sft" / "model")
    assert sum(p.numel() for p in model.parameters()) > 200_000
    for info in result["stage1_cache"].values():
        expert = load_expert(tmp_path / "cache" / "stage1" / info["key"] / "expert")
        assert sum(p.numel() for p in expert.parameters()) > 10_000


def test_killed_trial_resumes_and_ends_at_the_same_step(tmp_path):
    d = tiny_spec_dict(checkpoint_every=3)
    d["train"]["stages"]["sft"].update(epochs=10)  # 80 steps (several seconds), checkpoints at 3, 6, 9, ...
    spec_path = write_spec(d, tmp_path / "t.yaml")
    out = tmp_path / "trial"
    _, trial_yaml, cache = prepare_trial(spec_path, out, 2)
    cmd = torchrun_command(trial_yaml, out, cache, 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TINY_YAML.parents[2])}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = out / "checkpoints" / "sft" / "step_0000003" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "no sft checkpoint appeared"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole torchrun process group, mid-stage
    proc.wait()
    assert not (out / "stages" / "sft" / "done.json").exists(), "the kill came too late to be mid-stage"
    assert not (out / "result.json").exists() and (out / "stages" / "align_projector" / "done.json").exists()

    result = run_trial(spec_path, out, nproc=2)  # the same command again
    metrics = _check_complete(out, result, "eagle", 2)
    assert result["steps"] == {"align_expert": 16, "align_projector": 8, "sft": 80}
    log = (out / "logs" / "rank0.log").read_text()
    assert "resumed from" in log and "stage align_projector already finished" in log
    sft_steps = [m["step"] for m in metrics if m["stage"] == "sft"]
    assert sft_steps == list(range(1, 81))  # no step lost or logged twice


def _cache_trial(tmp_path: Path, name: str, second: str, cache: Path) -> Path:
    d = tiny_spec_dict(checkpoint_every=100)
    d.update(name=name, cache_dir=str(cache))
    d["experts"] = [{"preset": "tiny-clip"}, {"preset": second}]
    for st in d["train"]["stages"].values():
        st["max_steps"] = 2
    return write_spec(d, tmp_path / f"{name}.yaml")


def test_stage1_cache_is_reused_by_a_trial_sharing_an_expert(tmp_path):
    cache = tmp_path / "cache"
    results = {}
    for name, second in (("a", "tiny-convnext"), ("b", "tiny-dinov2")):
        results[name] = run_trial(_cache_trial(tmp_path, name, second, cache), tmp_path / name, nproc=1)
    assert results["a"]["stage1_cache"]["tiny-clip"]["cached"] is False
    assert results["b"]["stage1_cache"]["tiny-clip"]["cached"] is True
    assert results["b"]["stage1_cache"]["tiny-dinov2"]["cached"] is False
    assert results["b"]["stage1_cache"]["tiny-clip"]["key"] == results["a"]["stage1_cache"]["tiny-clip"]["key"]
    b_align = [m for m in read_metrics(tmp_path / "b" / "metrics.jsonl") if m["stage"] == "align_expert"]
    assert {m["expert"] for m in b_align} == {"tiny-dinov2"}  # no stage-1 step ran for tiny-clip
    assert results["b"]["steps"]["align_expert"] == 2
    assert len(list((cache / "stage1").glob("*/meta.json"))) == 3


def test_repeats_that_vary_only_the_sft_seed_reuse_stage1(tmp_path):
    cache = tmp_path / "cache"
    results = {}
    for name, seed in (("s0", 0), ("s1", 1)):
        path = _cache_trial(tmp_path, name, "tiny-convnext", cache)
        d = yaml.safe_load(path.read_text())
        d.update(seed=seed, align_seed=7)
        results[name] = run_trial(write_spec(d, path), tmp_path / name, nproc=1)
    assert all(not v["cached"] for v in results["s0"]["stage1_cache"].values())
    assert all(v["cached"] for v in results["s1"]["stage1_cache"].values())  # no second pre-alignment
    assert results["s1"]["seeds"] == {"sft": 1, "align": 7} and results["s1"]["steps"]["align_expert"] == 0
    sft = {n: [m["loss"] for m in read_metrics(tmp_path / n / "metrics.jsonl") if m["stage"] == "sft"]
           for n in results}
    assert sft["s0"] != sft["s1"]  # the SFT seed still changes the SFT data order


def test_concurrent_trials_train_a_shared_expert_once(tmp_path):
    import threading

    cache = tmp_path / "cache"
    specs = {"a": _cache_trial(tmp_path, "a", "tiny-convnext", cache), "b": _cache_trial(tmp_path, "b", "tiny-sam", cache)}
    prepare_trial(specs["a"], tmp_path / "a", 1)  # synthetic data once, so both start stage 1 together
    results, errors = {}, []

    def go(name):
        try:
            results[name] = run_trial(specs[name], tmp_path / name, nproc=1)
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=go, args=(n,)) for n in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    cached = sorted(r["stage1_cache"]["tiny-clip"]["cached"] for r in results.values())
    assert cached == [False, True]  # one trained it, the other waited on the lock and reused it
    clip_steps = [m for n in specs for m in read_metrics(tmp_path / n / "metrics.jsonl")
                  if m["stage"] == "align_expert" and m["expert"] == "tiny-clip"]
    assert [m["step"] for m in clip_steps] == [1, 2]


def test_shipped_tiny_trial_runs_on_one_process_and_its_loss_falls(tmp_path):
    d = json.loads(json.dumps(__import__("yaml").safe_load(TINY_YAML.read_text())))
    d["cache_dir"] = str(tmp_path / "cache")
    t0 = time.time()
    result = run_trial(write_spec(d, tmp_path / "tiny.yaml"), tmp_path / "trial", nproc=1)
    assert time.time() - t0 < 60
    metrics = _check_complete(tmp_path / "trial", result, "eagle", 1)
    first, last = _falls(metrics, "sft")
    assert last < first - 0.5, (first, last)


def test_one_and_two_processes_train_the_same_model(tmp_path):
    """The global batch (and the data order) does not depend on the process count."""
    d = tiny_spec_dict(recipe="baseline", checkpoint_every=100)
    d["train"]["stages"]["pretrain"] = dict(d["train"]["stages"]["align_projector"])
    for st in d["train"]["stages"].values():
        st["max_steps"] = 4
    spec = write_spec(d, tmp_path / "t.yaml")
    one = run_trial(spec, tmp_path / "one", nproc=1)
    two = run_trial(spec, tmp_path / "two", nproc=2)
    assert one["steps"] == two["steps"] == {"pretrain": 4, "sft": 4}
    assert two["heldout_loss"] == pytest.approx(one["heldout_loss"], rel=1e-4)
    losses = [[m["loss"] for m in read_metrics(tmp_path / n / "metrics.jsonl")] for n in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_interval_evaluation_logs_objectives_during_sft(tmp_path):
    """eval.interval_steps: eval lines (with the objective, for pruners) during SFT, then the final one."""
    d = tiny_spec_dict()
    d["train"]["stages"]["sft"].update(max_steps=6)
    d["eval"] = {"benchmarks": ["gqa", "pope"], "limit": 4, "batch_size": 4, "max_new_tokens": 2, "interval_steps": 2}
    out = tmp_path / "trial"
    result = run_trial(write_spec(d, tmp_path / "t.yaml"), out, nproc=1)
    evals = [m for m in read_metrics(out / "metrics.jsonl") if m["stage"] == "eval"]
    assert [m["step"] for m in evals] == [2, 4, 6]
    assert all(isinstance(m["objective"], float) and {"gqa", "pope"} <= set(m) for m in evals)
    assert evals[-1]["objective"] == pytest.approx(result["objective"])
    sft = [m["step"] for m in read_metrics(out / "metrics.jsonl") if m["stage"] == "sft"]
    assert sft == list(range(1, 7))  # evaluation interleaves with training, it does not replace steps


def test_packed_grouped_trial_with_loader_workers_learns(tmp_path):
    """data.packing / group_by_length / num_workers reach every stage's loader through the worker."""
    d = tiny_spec_dict(checkpoint_every=100)
    d["data"].update(num_workers=2, group_by_length=True, packing="sft")
    for st in d["train"]["stages"].values():
        st["max_steps"] = 2
    d["train"]["stages"]["sft"].update(max_steps=None, epochs=3)
    out = tmp_path / "trial"
    result = run_trial(write_spec(d, tmp_path / "t.yaml"), out, nproc=1)
    metrics = _check_complete(out, result, "eagle", 1)
    first, last = _falls(metrics, "sft")
    assert last < first - 0.3, (first, last)
