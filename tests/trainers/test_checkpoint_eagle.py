"""Checkpoints: atomic, only complete ones count, resume restores weights/optimizer/scheduler/rng."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainers.training.checkpoint import latest_step, load_checkpoint, save_checkpoint


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    model[0].requires_grad_(False)  # frozen: not in the checkpoint
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched


def _train(model, opt, sched, n):
    for _ in range(n):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def test_resume_continues_exactly(tmp_path):
    model, opt, sched = _setup()
    _train(model, opt, sched, 3)
    save_checkpoint(tmp_path, 3, model, optimizer=opt, scheduler=sched, rank=0, extra={"stage": "sft"})
    _train(model, opt, sched, 2)
    reference = model[1].weight.detach().clone()

    model2, opt2, sched2 = _setup()  # fresh process: same init, then resume
    state = load_checkpoint(tmp_path, model2, opt2, sched2)
    assert state == {"step": 3, "stage": "sft"}
    _train(model2, opt2, sched2, 2)
    torch.testing.assert_close(model2[1].weight, reference, rtol=0, atol=0)


def test_only_complete_checkpoints_count_and_old_ones_are_pruned(tmp_path):
    model, opt, sched = _setup()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, optimizer=opt, scheduler=sched, rank=0)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000002", "step_0000003"]
    (tmp_path / "step_0000009").mkdir()  # killed while writing: no COMPLETE marker
    assert latest_step(tmp_path) == 3
    assert latest_step(tmp_path / "nothing") is None


def test_mismatched_trainable_set_is_an_error(tmp_path):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path, 1, model, optimizer=opt, scheduler=sched, rank=0)
    model2, opt2, sched2 = _setup()
    model2[0].requires_grad_(True)
    with pytest.raises(RuntimeError, match="does not match the stage's trainable parameters"):
        load_checkpoint(tmp_path, model2, opt2, sched2)


def test_no_checkpoint_is_a_clear_error(tmp_path):
    model, opt, sched = _setup()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_checkpoint(tmp_path, model, opt, sched)


def test_rng_state_is_saved_and_restored(tmp_path):
    model, opt, sched = _setup()
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 1, model, optimizer=opt, scheduler=sched, rank=0)
    expected = torch.rand(4)
    assert (tmp_path / "step_0000001" / "rng_rank0.pt").is_file()
    torch.manual_seed(999)
    load_checkpoint(tmp_path, *_setup(), rank=0)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)


def test_a_rank_without_rng_state_is_reseeded_and_says_so(tmp_path, caplog):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path, 1, model, optimizer=opt, scheduler=sched, rank=0)
    draws = []
    for _ in range(2):
        with caplog.at_level("WARNING"):
            load_checkpoint(tmp_path, *_setup(), rank=1)  # written by one rank, resumed by two
        draws.append(torch.rand(3))
    assert "no RNG state for rank 1" in caplog.text
    torch.testing.assert_close(draws[0], draws[1])  # a stream from (step, rank), not from chance
