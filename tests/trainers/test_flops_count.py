"""FLOP counts of tiny parts against hand counts (matmul, convolution and attention FLOPs, 2 per
multiply-add), forward only when frozen, with backward when trained; and a real model's step."""
from __future__ import annotations

import pytest
import torch

import experts
from trainers.estimate.arch_profiles import ArchProfiler, llm_config
from trainers.estimate.flops import peak_tflops, step_flops
from trainers.spec import LLMSpec


def mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


@pytest.fixture(scope="module")
def prof():
    return ArchProfiler("fp32")


def vit_forward(tokens: int, patches: int, patch_in: int, d: int, ff: int, layers: int) -> int:
    """Patch conv + per layer: q, k, v, o, two MLP matmuls, scores and weighted sum."""
    per_layer = 4 * mm(tokens, d, d) + mm(tokens, d, ff) + mm(tokens, ff, d) + 2 * mm(tokens, tokens, d)
    return mm(patches, patch_in, d) + layers * per_layer


def test_frozen_mixture_counts_forward_only(prof):
    # tiny-clip: 64 px / 16 -> 16 patches + CLS, width 32, MLP 64, 2 layers
    clip = vit_forward(17, 16, 3 * 16 * 16, 32, 64, 2)
    # tiny-dinov2: 56 px / 14 -> 16 patches + CLS, width 48, MLP 2x = 96, 2 layers
    dino = vit_forward(17, 16, 3 * 14 * 14, 48, 96, 2)
    assert prof.expert(experts.get_preset("tiny-clip"), trained=False).flops == clip == 1_417_472
    assert prof.expert(experts.get_preset("tiny-dinov2"), trained=False).flops == dino == 2_267_520


def test_trained_expert_adds_its_backward(prof):
    d, t = 32, 17
    linears = 4 * mm(t, d, d) + mm(t, d, 64) + mm(t, 64, d)
    attn = 2 * mm(t, t, d)
    fwd = vit_forward(t, 16, 768, d, 64, 2)
    # feature_layer -2: no gradient reaches the last layer. Layer 0: input + weight gradients (2x its
    # matmuls), attention backward = 5 score-sized matmuls (recompute + 4 gradients); the patch
    # conv needs only its weight gradient (images need none).
    bwd = 2 * linears + attn * 5 // 2 + mm(16, 768, d)
    assert prof.expert(experts.get_preset("tiny-clip"), trained=True).flops == fwd + bwd == 2_853_440


def test_head_counts_projector_and_gradients_into_trained_experts(prof):
    # channel concat of 32 + 48 wide features on 16 tokens -> mlp2x_gelu 80 -> 64 -> 64
    l1, l2 = mm(16, 80, 64), mm(16, 64, 64)
    frozen_inputs = (l1 + l2) + (l1 + 2 * l2)  # forward + weight grads + l2's input grad
    head = prof.head([32, 48], 16, [False, False], fusion="channel_concat", options={}, projector="mlp2x_gelu", hidden=64)
    assert head.flops == frozen_inputs and head.tokens == 16
    assert head.trainable == 80 * 64 + 64 + 64 * 64 + 64 and head.frozen == 0
    into_expert = prof.head([32, 48], 16, [True, False], fusion="channel_concat", options={}, projector="mlp2x_gelu", hidden=64)
    assert into_expert.flops == frozen_inputs + l1  # l1's input gradient, for the trained expert


def test_llm_frozen_backprops_input_gradients_only(prof):
    s, d, ff, kv, vocab = 20, 64, 172, 32, 100  # tiny-llama: 4 heads of 16, 2 kv heads (GQA)
    cfg = llm_config(LLMSpec(preset="tiny-llama"), vocab)
    linears = 2 * mm(s, d, d) + 2 * mm(s, d, kv) + 3 * mm(s, d, ff)
    attn = 2 * mm(s, s, d)
    head = mm(s, d, vocab)
    fwd = 2 * (linears + attn) + head
    input_grads = 2 * (linears + attn * 5 // 2) + head
    frozen = prof.llm(cfg, s, trained=False)
    trained = prof.llm(cfg, s, trained=True)
    assert frozen.flops == fwd + input_grads
    assert trained.flops == fwd + input_grads + 2 * linears + head  # + weight gradients
    assert (frozen.trainable, trained.frozen) == (0, 0) and frozen.frozen == trained.trainable > 0


def test_llm_layer_extrapolation_matches_a_full_count():
    """The LLM is counted with 1 and 2 layers and extrapolated: exact FLOPs for alike layers; saved
    activations on fake tensors within 10 % of a real run's (fake views share storage less often)."""
    from trainers.estimate.memory import count_saved

    cfg = llm_config(LLMSpec(preset="tiny-llama"), 50)
    cfg4 = cfg.__class__.from_dict({**cfg.to_dict(), "num_hidden_layers": 4})
    p = ArchProfiler("fp32").llm(cfg4, 12, trained=True)
    from transformers import AutoModelForCausalLM

    from trainers.estimate.flops import flop_counter

    model = AutoModelForCausalLM.from_config(cfg4)
    embeds = torch.rand(1, 12, 64, requires_grad=True)
    counter = flop_counter()
    with counter, count_saved(model) as saved:
        model(inputs_embeds=embeds, labels=torch.zeros(1, 12, dtype=torch.long), use_cache=False).loss.backward()
    assert p.flops == counter.get_total_flops()
    assert saved.total <= p.saved.total <= 1.1 * saved.total
    assert len(p.saved.blocks) == len(saved.blocks) == 4


def test_real_step_counts_match_the_parts(tmp_path, prof):
    """step_flops on a real tiny EagleModel (frozen experts and LLM, as in align_projector) equals
    the parts counted on fake tensors."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers_eagle import tiny_model

    model = tiny_model(tmp_path)
    model.mixture.set_experts_trainable(False)
    model.llm.requires_grad_(False)
    model.train()
    tok = model.tokenizer
    from trainers.data.collate import expand_image_tokens

    ids = tok("<image> a red circle", add_special_tokens=False)["input_ids"]
    flat, _ = expand_image_tokens(torch.tensor(ids), torch.tensor(ids), model.image_token_id, model.num_image_tokens)
    batch = {"input_ids": flat[None], "attention_mask": torch.ones(1, len(flat), dtype=torch.long),
             "images": torch.rand(1, 3, 64, 64), "labels": flat[None].clone()}
    got = step_flops(model, batch)
    vision = sum(prof.expert(experts.get_preset(n), False).flops for n in ("tiny-clip", "tiny-convnext"))
    seq = len(ids) - 1 + model.num_image_tokens
    llm = prof.llm(llm_config(LLMSpec(preset="tiny-llama"), model.llm.config.vocab_size), seq, False)
    head = prof.head([32, 64], 16, [False, False], fusion="channel_concat", options={}, projector="mlp2x_gelu", hidden=64)
    assert got["forward"]["vision"] == vision  # frozen experts: forward only
    assert got["forward"]["fusion_projector"] == mm(16, 96, 64) + mm(16, 64, 64)
    assert got["total"] == vision + head.flops + llm.flops


def test_peak_tflops_known_gpus_and_flag():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA L40S", 362.0) == 362.0
    with pytest.raises(ValueError, match="--gpu-peak-tflops"):
        peak_tflops("NVIDIA H100 PCIe")
    with pytest.raises(ValueError, match="--gpu-peak-tflops"):
        peak_tflops("NVIDIA L40S")
