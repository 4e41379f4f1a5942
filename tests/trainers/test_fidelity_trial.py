"""A real trial at a rung (trainers/stages/fidelity.py): SFT stops at half its steps, is evaluated on the
rung's slim subset, and a second launch of the same spec continues from that checkpoint to the
end, with the losses of one uninterrupted run."""
from __future__ import annotations

import json

import pytest

from tests.trainers.helpers_eagle import tiny_spec_dict, write_spec
from trainers.stages.fidelity import FidelityRequest, write_request
from trainers.launch import run_trial
from trainers.training.metrics import read_metrics

pytestmark = pytest.mark.slow


def _sft_losses(out):
    return {m["step"]: m["loss"] for m in read_metrics(out / "metrics.jsonl") if m["stage"] == "sft"}


def test_a_rung_stops_sft_and_the_next_launch_continues_it(tmp_path):
    d = tiny_spec_dict(checkpoint_every=100)  # the only SFT checkpoint is the rung's
    d["data"]["synthetic"]["n_eval"] = 4  # SFT: 8 steps
    d["eval"] = {"benchmarks": ["gqa", "pope"], "limit": 4, "batch_size": 4, "max_new_tokens": 2,
                 "bootstrap": {"resamples": 20}}
    spec = write_spec(d, tmp_path / "t.yaml")
    reference = run_trial(spec, tmp_path / "ref", nproc=1)
    assert reference["fidelity"] == {"rung": 0, "fraction": 1.0, "steps_done": 8, "steps_full": 8,
                                     "stopped": False, "eval_early_stopped": False, "eval_items_done": 8,
                                     "eval_items_full": 8}

    out = tmp_path / "rung"
    write_request(out, FidelityRequest(rung=0, fraction=0.5, eval_limit=2))
    low = run_trial(spec, out, nproc=1)
    assert low["fidelity"] == {"rung": 0, "fraction": 0.5, "steps_done": 4, "steps_full": 8, "stopped": True,
                               "eval_early_stopped": False, "eval_items_done": 4, "eval_items_full": 4}
    assert low["steps"]["sft"] == 4 and "objective_ci" not in low  # a lower rung: no intervals
    assert set(low["item_scores"]) == {"gqa", "pope"} and len(low["item_scores"]["gqa"]) == 2
    assert (out / "checkpoints" / "sft" / "step_0000004" / "COMPLETE").is_file()
    assert not (out / "stages" / "sft" / "done.json").exists()

    write_request(out, FidelityRequest(rung=1, fraction=1.0, final=True))
    full = run_trial(spec, out, nproc=1)  # the same spec: the directory continues
    assert full["resumed_from"]["sft"] == 4
    assert full["steps"]["sft"] == 8 and full["steps"]["align_projector"] == reference["steps"]["align_projector"]
    assert full["fidelity"]["rung"] == 1 and not full["fidelity"]["stopped"]
    assert full["fidelity"]["eval_items_full"] == 8 and "item_scores" not in full
    losses, ref = _sft_losses(out), _sft_losses(tmp_path / "ref")
    assert sorted(losses) == list(range(1, 9))
    assert losses == pytest.approx(ref, rel=1e-5)
    assert full["heldout_loss"] == pytest.approx(reference["heldout_loss"], rel=1e-5)
    assert full["scores"] == pytest.approx(reference["scores"])
    assert json.loads((out / "result.json").read_text())["fidelity"]["steps_done"] == 8


def test_a_rung_that_promotes_by_intervals_has_them_without_the_blind_control(tmp_path):
    d = tiny_spec_dict(checkpoint_every=100)
    d["data"]["synthetic"]["n_eval"] = 4
    d["eval"] = {"benchmarks": ["gqa", "pope"], "limit": 4, "batch_size": 4, "max_new_tokens": 2, "blind": True,
                 "bootstrap": {"resamples": 20}}
    out = tmp_path / "rung"
    write_request(out, FidelityRequest(rung=0, fraction=0.5, eval_limit=2, intervals=True))
    low = run_trial(write_spec(d, tmp_path / "t.yaml"), out, nproc=1)
    assert low["fidelity"]["stopped"] and low["fidelity"]["eval_items_full"] == 4
    lo, hi = low["objective_ci"]
    assert lo <= low["objective"] <= hi and len(low["bootstrap"]["objective"]) == 20
    assert "blind_scores" not in low and not (out / "predictions" / "gqa.blind.jsonl").exists()
