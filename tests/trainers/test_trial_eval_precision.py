"""Evaluation precision follows the trial's precision, not its strategy: bf16 trials evaluate under
bf16 autocast (DDP, ZeRO-2 and ZeRO-3 alike), fp32 trials in fp32; training mode comes back."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainers.training.distributed import DistEnv
from trainers.stages.evaluate import eval_mode
from trainers.stages.runner import trains_bf16


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
@pytest.mark.parametrize("precision, device, bf16", [("bf16", "cpu", True), ("fp32", "cpu", False),
                                                      ("auto", "cpu", False), ("auto", "cuda", True)])
def test_eval_precision_is_the_trials(strategy, precision, device, bf16):
    spec = SimpleNamespace(train=SimpleNamespace(precision=precision, strategy=strategy))
    assert trains_bf16(spec, torch.device(device)) is bf16
    runner = SimpleNamespace(env=DistEnv(), bf16=bf16)
    model = torch.nn.Linear(4, 4).train()
    with eval_mode(runner, model):
        assert not model.training and not torch.is_grad_enabled()
        assert torch.is_autocast_enabled("cpu") is bf16
        out = model(torch.randn(2, 4))
    assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert model.training
