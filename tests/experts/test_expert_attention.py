"""SAM and Pix2Struct run SDPA attention by default; it equals the eager reference (explicit
softmax) within float tolerance, forward and backward, global and windowed SAM blocks alike."""
from __future__ import annotations

import pytest
import torch

import experts


def _pair(name: str):
    torch.manual_seed(0)
    cfg = experts.get_preset(name).with_overrides(freeze=False)
    eager = experts.build_expert(cfg.with_overrides(attention="eager")).train()
    sdpa = experts.build_expert(cfg).train()
    sdpa.load_state_dict(eager.state_dict())
    return eager, sdpa


@pytest.mark.parametrize("name", ["tiny-sam", "tiny-pix2struct"])
def test_sdpa_is_the_default_and_equals_eager(name):
    eager, sdpa = _pair(name)
    assert sdpa.config.attention == "sdpa" and sdpa.backbone.config._attn_implementation == "sdpa"
    assert eager.backbone.config._attn_implementation == "eager"
    images = torch.rand(2, 3, 96, 96)
    outs, grads = [], []
    for model in (eager, sdpa):
        out = model(images)
        (out.float() ** 2).mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-3, atol=1e-5)


def test_sam_global_blocks_use_the_sdpa_class():
    eager, sdpa = _pair("tiny-sam")
    global_idx = eager.backbone.config.global_attn_indexes[0]
    assert type(sdpa.backbone.vision_encoder.layers[global_idx].attn).__name__ == "SamVisionSdpaAttention"
    assert type(eager.backbone.vision_encoder.layers[global_idx].attn).__name__ == "SamVisionAttention"


def test_sdpa_in_bf16_stays_close_to_fp32_eager():
    eager, sdpa = _pair("tiny-sam")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = eager.eval()(images)
        low = sdpa.to(torch.bfloat16).eval()(images)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=5e-2, atol=5e-2)


def test_a_saved_expert_keeps_the_attention_it_is_loaded_with(tmp_path):
    _, sdpa = _pair("tiny-sam")
    sdpa.save_pretrained(tmp_path / "e")
    back = experts.load_expert(tmp_path / "e")
    assert back.backbone.config._attn_implementation == "sdpa"
