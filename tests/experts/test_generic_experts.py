"""hf_vision and timm: any transformers vision tower or timm model from a config alone."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import experts
from experts.presets_generic import (
    GENERIC_FULL_PRESETS,
    GENERIC_LETTERS,
    GENERIC_TINY_PRESETS,
)

TINY = list(GENERIC_TINY_PRESETS)


def _images(b=2, size=72):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0))


def _build(name, **kw):
    torch.manual_seed(0)
    return experts.build_expert(experts.get_preset(name).with_overrides(**kw))


@pytest.mark.parametrize("name", TINY)
def test_tiny_generic_expert_tokens_and_gradients(name):
    e = _build(name, freeze=False)
    out = e(_images())
    assert out.shape == (2, 16, e.out_dim) and torch.isfinite(out).all()
    out.square().mean().backward()
    unused = e.unused_prefixes()
    for n, p in e.backbone.named_parameters():
        if n in unused:
            assert not p.requires_grad and p.grad is None, n
        else:  # every trainable parameter is reached: DDP sees no unused ones
            assert p.requires_grad and p.grad is not None, n


@pytest.mark.parametrize("name", ["tiny-siglip2", "tiny-dinov2-reg", "tiny-timm-vit"])
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    x = _images()
    ref, ckpt = _build(name, freeze=False), _build(name, freeze=False, grad_checkpointing=True)
    assert ckpt.checkpointing_active and not ref.checkpointing_active
    ref.train(), ckpt.train()
    a, b = ref(x), ckpt(x)
    torch.testing.assert_close(a, b)
    a.sum().backward(), b.sum().backward()
    g1 = [p.grad for p in ref.backbone.parameters() if p.grad is not None]
    g2 = [p.grad for p in ckpt.backbone.parameters() if p.grad is not None]
    for u, v in zip(g1, g2):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("name", ["tiny-siglip2", "tiny-dinov3", "tiny-timm-vit", "tiny-internvit"])
def test_position_interpolation_reaches_a_larger_grid(name):
    cfg = experts.get_preset(name)
    e = _build(name, input_size=cfg.input_size * 2, grid=8)
    assert e(_images()).shape == (2, 64, e.out_dim)


def test_a_fixed_position_table_at_another_size_is_a_clear_error():
    with pytest.raises(experts.ExpertConfigError, match="tiny-aimv2.*cannot run at 112x112"):
        _build("tiny-aimv2", input_size=112, grid=8)


def test_feature_layer_picks_the_hidden_state_and_frees_later_blocks():
    e = _build("tiny-dinov2-reg", feature_layer=1)
    assert any(n.startswith("encoder.layer.1.") for n in e.unused_prefixes())
    with torch.no_grad():
        out = e.backbone(pixel_values=e.preprocess(_images()), output_hidden_states=True)
    want = out.hidden_states[1][:, -16:]  # CLS + 4 registers dropped
    torch.testing.assert_close(e(_images()), want)


def test_dual_encoder_checkpoint_gives_its_vision_half_and_preprocessing(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(1)
    vision = {k: v for k, v in experts.get_preset("tiny-siglip").arch.items() if k != "model_type"}
    full = SiglipModel(SiglipConfig(vision_config=vision, text_config=dict(hidden_size=16, intermediate_size=32,
                                    num_hidden_layers=1, num_attention_heads=2, vocab_size=64)))
    full.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}))
    cfg = experts.ExpertConfig(name="mine", family="hf_vision", source=str(tmp_path), pretrained=True,
                               native_size=64, input_size=64, hidden_size=32, grid=4, mean=None, std=None)
    e = experts.build_expert(cfg)
    assert e.config.mean == (0.1, 0.2, 0.3) and e.config.std == (0.4, 0.5, 0.6)
    torch.testing.assert_close(e.backbone.embeddings.patch_embedding.weight,
                               full.vision_model.embeddings.patch_embedding.weight)
    with torch.no_grad():
        want = full.vision_model(pixel_values=e.preprocess(_images())).last_hidden_state
    torch.testing.assert_close(e(_images()), want)


def test_saved_generic_experts_round_trip(tmp_path):
    for name in ("tiny-siglip2", "tiny-radio"):
        e = _build(name).eval()
        e.save_pretrained(tmp_path / name)
        back = experts.load_expert(tmp_path / name).eval()
        torch.testing.assert_close(back(_images()), e(_images()))


def test_timm_local_weight_file_and_pretrained_stats(tmp_path):
    src = _build("tiny-timm-vit")
    assert src.config.mean == (0.5, 0.5, 0.5)  # from timm's pretrained config of vit_base_patch16_224
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(tmp_path / "w.safetensors"))
    e = experts.build_expert(src.config.with_overrides(pretrained=True, source=str(tmp_path / "w.safetensors")))
    torch.testing.assert_close(e.eval()(_images()), src.eval()(_images()))


@pytest.mark.parametrize("name", ["tiny-siglip2", "tiny-timm-convnext"])
def test_missing_weights_and_unreachable_hub_are_clear_errors(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = experts.get_preset(name)
    with pytest.raises(experts.ExpertLoadError, match="does not exist|no .safetensors"):
        experts.build_expert(cfg.with_overrides(pretrained=True, source=str(tmp_path / "nothing")))
    hub = "nobody-here/no-such-model" if cfg.family == "hf_vision" else "hf-hub:nobody-here/no-such-model"
    with pytest.raises(experts.ExpertLoadError, match="nobody-here/no-such-model"):
        experts.build_expert(cfg.with_overrides(pretrained=True, source=hub))


def test_full_size_presets_are_the_advertised_models():
    from experts.describe import describe_preset

    assert list(GENERIC_LETTERS) == list("GHIJKL")
    rows = {n: describe_preset(n) for n in GENERIC_FULL_PRESETS}
    assert all(r["tokens"] == 1024 for r in rows.values())
    millions = {n: round(r["params"] / 1e6) for n, r in rows.items()}
    assert 400 <= millions["siglip2-so400m-512"] <= 440  # So400m tower + its pooling head
    for n in ("dinov2-l-reg-448", "dinov3-l-512", "aimv2-l-448", "c-radio-v3-l-512", "internvit-300m-448"):
        assert 290 <= millions[n] <= 330, (n, millions[n])
    assert rows["siglip2-so400m-512"]["width"] == 1152
