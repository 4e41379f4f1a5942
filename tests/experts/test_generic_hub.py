"""The full-size generic presets G-L through their real loading path: offline, each fails at the hub
call with one line naming the preset and the hub id; and each loads from a local directory laid out
as its hub checkpoint (same model class, dual encoder / VLM wrapper / timm weight file), written
from a tiny random-init config."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import experts
from experts.families.hf_vision import model_class_for, random_config
from experts.presets_generic import GENERIC_FULL_PRESETS

TWIN = {"G": "tiny-siglip2", "H": "tiny-dinov2-reg", "I": "tiny-dinov3", "J": "tiny-aimv2", "K": "tiny-radio",
        "L": "tiny-internvit"}
FULL = {experts.get_preset(n).letter: n for n in GENERIC_FULL_PRESETS}
TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 64}


@pytest.mark.parametrize("name", GENERIC_FULL_PRESETS)
def test_offline_the_hub_call_fails_in_one_line_naming_preset_and_hub_id(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = experts.get_preset(name)
    with torch.device("meta"), pytest.raises(experts.ExpertLoadError) as err:  # meta: no 300M random init first
        experts.build_expert(cfg)
    msg = str(err.value)
    hub = cfg.source if cfg.family == "hf_vision" else f"timm/{cfg.source}"  # timm names its hub repository
    assert "\n" not in msg and msg.startswith(f"expert {name!r}:") and hub in msg, msg


def _sizes(tiny: experts.ExpertConfig) -> dict:
    return {k: getattr(tiny, k) for k in ("native_size", "input_size", "hidden_size", "grid", "mean", "std")}


def _patch_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(p for n, p in module.named_parameters()
                if n.endswith("weight") and ("patch" in n or "embeds.proj" in n)).detach()


def _hub_layout(letter: str, tiny: experts.ExpertConfig, out) -> torch.Tensor:
    """Save a random-init model as the preset's hub checkpoint is laid out; returns its patch weights."""
    if letter == "K":  # timm: a safetensors weight file of the same timm architecture
        import timm

        arch = dict(tiny.arch)
        model = timm.create_model(arch.pop("model_name"), pretrained=False, num_classes=0, **arch)
        out.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
        return _patch_weight(model)
    vision = random_config(tiny)
    if letter == "G":  # the hub checkpoint is the dual encoder
        from transformers import Siglip2Config, Siglip2Model

        model = Siglip2Model(Siglip2Config(vision_config=vision.to_dict(), text_config=TEXT))
        tower = model.vision_model
    elif letter == "L":  # the -hf VLM checkpoint; its vision tower under model.vision_tower.
        from transformers import InternVLConfig, InternVLForConditionalGeneration

        model = InternVLForConditionalGeneration(InternVLConfig(
            vision_config=vision.to_dict(), text_config=dict(model_type="qwen2", num_key_value_heads=2, **TEXT)))
        tower = model.model.vision_tower
    else:
        model = tower = model_class_for(tiny.name, vision)(vision)
    model.save_pretrained(out)
    return _patch_weight(tower)


@pytest.mark.parametrize("letter", sorted(TWIN))
def test_a_local_directory_in_the_hub_layout_loads(letter, tmp_path):
    full, tiny = experts.get_preset(FULL[letter]), experts.get_preset(TWIN[letter])
    torch.manual_seed(0)
    want = _hub_layout(letter, tiny, tmp_path / "ckpt")
    # the full preset's loading settings (family, model class, weight prefix) at the tiny twin's sizes;
    # an hf_vision architecture comes from the directory's config.json
    arch = dict(tiny.arch) if full.family == "timm" else {"model_type": full.arch["model_type"]}
    cfg = full.with_overrides(arch=arch, source=str(tmp_path / "ckpt"), pretrained=True, **_sizes(tiny))
    e = experts.build_expert(cfg)
    torch.testing.assert_close(_patch_weight(e.backbone), want)
    out = e(torch.rand(2, 3, tiny.input_size, tiny.input_size))
    assert out.shape == (2, tiny.grid ** 2, tiny.hidden_size) and torch.isfinite(out).all()


def test_the_vlm_tower_loads_from_either_key_layout(tmp_path):
    from safetensors.torch import load_file

    full, tiny = experts.get_preset(FULL["L"]), experts.get_preset(TWIN["L"])
    torch.manual_seed(0)
    want = _hub_layout("L", tiny, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    saved = load_file(str(weights))
    assert any(k.startswith("vision_tower.") for k in saved)  # what transformers writes
    save_file({f"model.{k}": v for k, v in saved.items()}, str(weights))  # the nested layout
    cfg = full.with_overrides(arch={"model_type": full.arch["model_type"]}, source=str(tmp_path / "ckpt"), **_sizes(tiny))
    torch.testing.assert_close(_patch_weight(experts.build_expert(cfg).backbone), want)
