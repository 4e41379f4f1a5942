"""A finished stage lets go of its model and optimizer before the next stage is built; the last
stage's model stays for evaluation (as trained, not reloaded)."""
from __future__ import annotations

import gc
import weakref

import pytest

from tests.trainers.helpers_eagle import tiny_spec_dict, write_spec
from trainers.training.distributed import DistEnv


@pytest.mark.slow
def test_a_finished_stage_frees_its_model_and_optimizer(tmp_path):
    from trainers.stages.runner import TrialRunner

    d = tiny_spec_dict(recipe="baseline", checkpoint_every=100)
    d["data"]["synthetic"].update(n_pretrain=16, n_sft=16, n_heldout=8)
    d["train"]["stages"]["pretrain"] = dict(d["train"]["stages"]["align_projector"], max_steps=1)
    d["train"]["stages"]["sft"]["max_steps"] = 1
    from trainers.launch import prepare_trial

    spec, _, cache = prepare_trial(write_spec(d, tmp_path / "t.yaml"), tmp_path / "out")  # data + image checks
    runner = TrialRunner(spec, tmp_path / "out", DistEnv(), cache)
    built = []
    build = runner.build_stage_model

    def spy(*args):
        model = build(*args)
        built.append(weakref.ref(model))
        return model

    runner.build_stage_model = spy
    runner.run_simple_stage("pretrain", None, last=False)
    gc.collect()
    assert built[0]() is None, "the pretrain model is still referenced"
    assert runner.engine.opt is None and runner.engine.last_module is None
    runner.run_simple_stage("sft", "pretrain", last=True)
    assert built[1]() is not None and runner.final_model is built[1]()
    assert {p.dtype for p in runner.final_model.parameters()} == {__import__("torch").float32}
