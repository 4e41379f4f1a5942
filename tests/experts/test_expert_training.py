"""Freezing, unfreezing and gradient checkpointing of the tiny experts."""
from __future__ import annotations

import pytest
import torch

import experts

TINY = list(experts.TINY_PRESETS)


def _grads(expert, img):
    expert.zero_grad(set_to_none=True)
    expert(img).pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in expert.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", TINY)
def test_frozen_gets_no_gradients_unfrozen_does(kit, name):
    img = kit.images(2, 64)
    frozen = kit.tiny(name)  # presets are frozen by default
    assert not frozen.trainable
    assert all(not p.requires_grad for p in frozen.parameters())
    out = frozen(img)
    assert not out.requires_grad
    frozen.train()
    assert not frozen.backbone.training  # frozen: dropout/norm stay in eval mode

    live = kit.tiny(name, freeze=False).train()
    grads = _grads(live, img)
    trainable = {n for n, p in live.named_parameters() if p.requires_grad}
    assert trainable and set(grads) == trainable  # every trainable parameter is reached (DDP-safe)
    assert sum(g.abs().sum() for g in grads.values()) > 0
    assert live.backbone.training


@pytest.mark.parametrize("name", TINY)
def test_gradient_checkpointing_gives_same_gradients(kit, name):
    img = kit.images(2, 64, seed=3)
    plain = kit.tiny(name, freeze=False).train()
    ckpt = kit.tiny(name, freeze=False, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.config.grad_checkpointing and ckpt.checkpointing_active and not plain.checkpointing_active
    g1, g2 = _grads(plain, img), _grads(ckpt, img)
    assert g1.keys() == g2.keys() and g1
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-6, msg=k)


def test_set_trainable_toggles(kit):
    e = kit.tiny("tiny-sam")
    e.set_trainable(True)
    assert e.trainable and all(p.requires_grad for p in e.parameters())
    assert e(kit.images(1, 64)).requires_grad
    e.set_trainable(False)
    assert not e.trainable and not any(p.requires_grad for p in e.parameters())


def test_a_few_steps_reduce_a_loss(kit):
    e = kit.tiny("tiny-dinov2", freeze=False).train()
    img = kit.images(4, 56)
    target = torch.randn(4, 16, 48, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(e.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = (e(img) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
