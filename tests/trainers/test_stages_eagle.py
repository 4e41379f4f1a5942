"""Stages: trainable sets per stage, lr groups really in the optimizer, batch split and data order."""
from __future__ import annotations

import pytest
import torch

from tests.trainers.helpers_eagle import tiny_model
from trainers.training.distributed import DistEnv
from trainers.training.loop import BatchSplitError, accumulation_steps, total_steps, warmup_cosine
from trainers.training.loader import rank_micro_batches
from trainers.spec import LLMSpec, StageSpec, TrialSpec
from trainers.stages.recipes import freeze_for_stage, param_groups


def _spec(expert_freeze=(True, False), llm_freeze=False) -> TrialSpec:
    return TrialSpec(experts=[{"preset": "tiny-clip", "freeze": expert_freeze[0]},
                              {"preset": "tiny-convnext", "freeze": expert_freeze[1]}],
                     llm=LLMSpec(preset="tiny-llama", freeze=llm_freeze), data={"synthetic": {}})


def _opt(model, hp):
    groups = param_groups(model, hp)
    return torch.optim.AdamW([{"params": g.params, "lr": g.lr, "name": g.name} for g in groups], lr=hp.lr)


def test_sft_lr_groups_are_applied_and_frozen_groups_absent(tmp_path):
    from experts import get_preset

    model = tiny_model(tmp_path)
    for e, f in zip(model.mixture.experts, (True, False)):
        e.config = get_preset(e.config.name).with_overrides(freeze=f)
    freeze_for_stage(model, "sft", _spec())
    hp = StageSpec(lr=1e-3, lr_llm=2e-5, lr_projector=3e-4, lr_vision=7e-6)
    opt = _opt(model, hp)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"llm": 2e-5, "projector": 3e-4, "vision": 7e-6}
    vision = {id(p) for g in opt.param_groups if g["name"] == "vision" for p in g["params"]}
    # expert 0 is frozen; expert 1 trains every parameter its features reach
    assert vision == {id(p) for p in model.mixture.experts[1].parameters() if p.requires_grad} != set()
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}
    # one optimizer step moves each group by about its own lr (Adam's first step is ~lr * sign)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    opt.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters() if n in before}
    assert max(v for n, v in moved.items() if n.startswith("llm.")) == pytest.approx(2e-5, rel=5e-2)
    assert max(v for n, v in moved.items() if n.startswith("projector.")) == pytest.approx(3e-4, rel=5e-2)
    assert max(v for n, v in moved.items() if n.startswith("mixture.experts.1.")) == pytest.approx(7e-6, rel=5e-2)


def test_unset_group_lr_falls_back_to_stage_lr(tmp_path):
    model = tiny_model(tmp_path)
    freeze_for_stage(model, "align_expert", _spec())
    lrs = {g.name: g.lr for g in param_groups(model, StageSpec(lr=1e-3, lr_vision=2e-5))}
    assert lrs == {"projector": 1e-3, "vision": 2e-5}  # llm frozen in stage 1: no group


@pytest.mark.parametrize("stage,vision,llm", [("pretrain", [False, False], False),
                                              ("align_projector", [False, False], False),
                                              ("align_expert", [True, True], False),
                                              ("sft", [False, True], True)])
def test_trainable_sets_per_stage(tmp_path, stage, vision, llm, caplog):
    from experts import get_preset

    model = tiny_model(tmp_path)
    for e, f in zip(model.mixture.experts, (True, False)):
        e.config = get_preset(e.config.name).with_overrides(freeze=f)
    caplog.set_level("INFO")
    freeze_for_stage(model, stage, _spec())
    assert [e.trainable for e in model.mixture.experts] == vision
    assert [any(p.requires_grad for p in e.parameters()) for e in model.mixture.experts] == vision
    # a real backward reaches exactly the trainable experts (a frozen one runs without autograd)
    images = torch.rand(2, 3, 64, 64)
    model.projector(model.mixture(images)).square().mean().backward()
    got = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in e.parameters())
           for e in model.mixture.experts]
    assert got == vision
    assert all(p.requires_grad == llm for p in model.llm.parameters())
    assert all(p.requires_grad for p in model.projector.parameters())
    text = caplog.text
    assert f"[{stage}] llm: {'trainable' if llm else 'frozen'}" in text and "M params" in text


def test_llm_freeze_in_sft_removes_the_llm_group(tmp_path):
    model = tiny_model(tmp_path)
    freeze_for_stage(model, "sft", _spec(expert_freeze=(True, True), llm_freeze=True))
    assert [g.name for g in param_groups(model, StageSpec())] == ["projector"]


def test_batch_split():
    hp = StageSpec(global_batch_size=16, micro_batch_size=4)
    assert [accumulation_steps(hp, w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(BatchSplitError, match="global_batch_size 16 is not a multiple of micro_batch_size 4 x 3"):
        accumulation_steps(hp, 3)
    assert total_steps(StageSpec(global_batch_size=16, epochs=2), 100) == 12
    assert total_steps(StageSpec(global_batch_size=16, epochs=2, max_steps=5), 100) == 5
    with pytest.raises(BatchSplitError, match="fewer than one global batch"):
        total_steps(StageSpec(global_batch_size=16), 10)


def test_global_batch_is_the_same_for_any_process_count():
    hp = StageSpec(global_batch_size=8, micro_batch_size=2)
    for step in (0, 3, 7):  # 7 is in the second epoch of 48 items
        one = [i for mb in rank_micro_batches(48, step, hp, DistEnv(0, 1), accum=4, seed=1) for i in mb]
        two = [i for r in range(2) for mb in rank_micro_batches(48, step, hp, DistEnv(r, 2), accum=2, seed=1) for i in mb]
        assert one == two and len(set(one)) == 8
    epoch0 = {i for s in range(6) for mb in rank_micro_batches(48, s, hp, DistEnv(0, 1), accum=4, seed=1) for i in mb}
    assert epoch0 == set(range(48))  # one epoch sees every item once


def test_cosine_schedule_with_warmup():
    """ceil(0.1 * 100) = 10 linear warmup steps from 0, then a half cosine to 0 at step 100."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, 100, 0.1)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"] / 2.0)
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5) and lrs[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_deepspeed_configs_from_the_spec():
    from trainers.training.dsconfig import deepspeed_config

    hp = StageSpec(lr=1e-3, global_batch_size=16, micro_batch_size=2, max_grad_norm=0.5, weight_decay=0.1)
    z2 = deepspeed_config("deepspeed_zero2", hp, world_size=2, accum=4, bf16=False, on_gpu=False)
    assert z2["zero_optimization"]["stage"] == 2 and z2["gradient_accumulation_steps"] == 4
    assert z2["train_batch_size"] == 16 and z2["train_micro_batch_size_per_gpu"] == 2
    assert z2["optimizer"]["params"]["torch_adam"] is True and z2["bf16"]["enabled"] is False
    assert z2["gradient_clipping"] == 0.5 and z2["optimizer"]["params"]["weight_decay"] == 0.1
    z3 = deepspeed_config("deepspeed_zero3", hp, world_size=4, accum=2, bf16=True, on_gpu=True)
    assert z3["zero_optimization"]["stage"] == 3 and z3["bf16"]["enabled"] is True
    assert "torch_adam" not in z3["optimizer"]["params"]
    with pytest.raises(ValueError, match="!= global batch 16"):
        deepspeed_config("deepspeed_zero2", hp, world_size=2, accum=3, bf16=False, on_gpu=False)
    with pytest.raises(KeyError, match="deepspeed_zero2, deepspeed_zero3"):
        deepspeed_config("ddp", hp, 1, accum=8, bf16=False, on_gpu=False)
