"""Save/load round trips and pretrained loading from local sources (no hub)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import experts
from experts.base import CONFIG_FILE, WEIGHTS_FILE

TINY = list(experts.TINY_PRESETS)


@pytest.mark.parametrize("name", TINY)
def test_save_and_load_by_path_gives_identical_outputs(kit, name, tmp_path):
    e = kit.tiny(name, freeze=False).eval()
    with torch.no_grad():
        for p in e.parameters():  # move off the init so a silent re-init would show
            p.add_(0.01 * torch.randn_like(p))
    e.save_pretrained(tmp_path / "x")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    saved = json.loads((tmp_path / "x" / CONFIG_FILE).read_text())
    assert saved["pretrained"] is False and saved["family"] == e.config.family
    back = experts.load_expert(tmp_path / "x").eval()
    img = kit.images(2, 72)
    with torch.no_grad():
        torch.testing.assert_close(back(img), e(img), rtol=0, atol=0)
    assert back.config.freeze is False and back.trainable

    # the same directory as a pretrained source of a preset
    again = experts.build_expert(e.config.with_overrides(pretrained=True, source=str(tmp_path / "x"))).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(img), e(img), rtol=0, atol=0)


def test_hf_backbone_dir_loads_through_from_pretrained(kit, tmp_path):
    e = kit.tiny("tiny-dinov2").eval()
    e.backbone.save_pretrained(tmp_path / "hf")
    loaded = experts.build_expert(e.config.with_overrides(pretrained=True, source=str(tmp_path / "hf"))).eval()
    img = kit.images(1, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(img), e(img))


def test_timm_safetensors_file_loads(kit, tmp_path):
    e = kit.tiny("tiny-eva02").eval()
    save_file({k: v.contiguous() for k, v in e.backbone.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = experts.build_expert(e.config.with_overrides(pretrained=True, source=str(tmp_path))).eval()
    img = kit.images(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(img), e(img))


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-convnext"])
def test_missing_directory_is_a_clear_error(name, tmp_path):
    missing = tmp_path / "nope"
    cfg = experts.get_preset(name).with_overrides(pretrained=True, source=str(missing))
    with pytest.raises(experts.ExpertLoadError, match=f"{name}.*nope"):
        experts.build_expert(cfg)


def test_hf_dir_without_weights_is_a_clear_error(kit, tmp_path):
    e = kit.tiny("tiny-sam")
    e.backbone.config.save_pretrained(tmp_path)  # config.json only
    with pytest.raises(experts.ExpertLoadError, match="tiny-sam.*cannot load SamVisionModel"):
        experts.build_expert(e.config.with_overrides(pretrained=True, source=str(tmp_path)))


def test_hf_weights_of_another_model_are_refused_not_random_init(kit, tmp_path):
    kit.tiny("tiny-dinov2").backbone.save_pretrained(tmp_path)
    cfg = experts.get_preset("tiny-clip").with_overrides(pretrained=True, source=str(tmp_path))
    with pytest.raises(experts.ExpertLoadError, match="tiny-clip"):
        experts.build_expert(cfg)


def test_timm_dir_without_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    cfg = experts.get_preset("tiny-convnext").with_overrides(pretrained=True, source=str(tmp_path))
    with pytest.raises(experts.ExpertLoadError, match="no .safetensors weight file"):
        experts.build_expert(cfg)


def test_unreachable_hub_is_a_clear_error():
    cfg = experts.get_preset("tiny-clip").with_overrides(pretrained=True, source="nobody-here/no-such-model")
    with pytest.raises(experts.ExpertLoadError, match="nobody-here/no-such-model"):
        experts.build_expert(cfg)


def test_saved_dir_without_weights_is_a_clear_error(kit, tmp_path):
    kit.tiny("tiny-eva02").save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(experts.ExpertLoadError, match="model.safetensors"):
        experts.load_expert(tmp_path)
    with pytest.raises(experts.ExpertLoadError, match="expert.json"):
        experts.load_expert(tmp_path / "missing")


def test_pix2struct_encoder_loads_from_a_full_image_to_text_checkpoint(kit, tmp_path):
    from transformers import Pix2StructConfig, Pix2StructForConditionalGeneration

    e = kit.tiny("tiny-pix2struct").eval()
    vision = e.export_arch()
    text = dict(hidden_size=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2, vocab_size=64)
    torch.manual_seed(1)
    full = Pix2StructForConditionalGeneration(Pix2StructConfig(vision_config=vision, text_config=text))
    full.save_pretrained(tmp_path)
    loaded = experts.build_expert(e.config.with_overrides(pretrained=True, source=str(tmp_path))).eval()
    torch.testing.assert_close(loaded.backbone.embeddings.row_embedder.weight, full.encoder.embeddings.row_embedder.weight)
    e.load_state_dict({"backbone." + k: v for k, v in full.encoder.state_dict().items()})
    img = kit.images(1, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(img), e(img))


def test_clip_vision_loads_from_a_full_clip_checkpoint(kit, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    e = kit.tiny("tiny-clip").eval()
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                projection_dim=32)
    full = CLIPModel(CLIPConfig(vision_config=e.export_arch(), text_config=text))
    full.save_pretrained(tmp_path)
    loaded = experts.build_expert(e.config.with_overrides(pretrained=True, source=str(tmp_path))).eval()
    torch.testing.assert_close(loaded.backbone.embeddings.position_embedding.weight,
                               full.vision_model.embeddings.position_embedding.weight)
