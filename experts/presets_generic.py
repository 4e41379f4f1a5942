"""Presets of the generic families (hf_vision, timm): encoders since the paper at full size
(letters G-L, all 32x32 = 1024 tokens; architecture + hub id, sizes counted on the meta device)
and tiny random-init twins (4x4 = 16 tokens) that mix with the paper's tiny six."""
from __future__ import annotations

from experts.config import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExpertConfig,
)

IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
CLIP = {"mean": CLIP_MEAN, "std": CLIP_STD}
HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # SigLIP / SigLIP2 preprocessing
FROM_SOURCE = {"mean": None, "std": None}  # timm: the model's pretrained config


def _hf(name, letter, source, model_type, *, native, size, **arch) -> ExpertConfig:
    stats = arch.pop("stats")
    return ExpertConfig(name=name, family="hf_vision", letter=letter, source=source, pretrained=source is not None,
                        arch=dict(model_type=model_type, **arch), native_size=native, input_size=size,
                        hidden_size=arch["hidden_size"], grid=arch.pop("_grid", 32), **stats)


_FULL = [
    # G: SigLIP2-So400m/16 at 512 (Eagle 2.5's encoder), NaFlex position table of 32x32
    _hf("siglip2-so400m-512", "G", "google/siglip2-so400m-patch16-512", "siglip2_vision_model", native=512, size=512,
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, patch_size=16,
        num_patches=1024, stats=HALF),
    # H: DINOv2-L/14 with 4 registers, positions for 518 interpolated to 448
    _hf("dinov2-l-reg-448", "H", "facebook/dinov2-with-registers-large", "dinov2_with_registers", native=518, size=448,
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=518,
        num_register_tokens=4, layerscale_value=1e-5, mlp_ratio=4, stats=IMAGENET),
    # I: DINOv3 ViT-L/16 (distilled, LVD-1689M): RoPE positions, run at 512
    _hf("dinov3-l-512", "I", "facebook/dinov3-vitl16-pretrain-lvd1689m", "dinov3_vit", native=224, size=512,
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=16,
        image_size=224, num_register_tokens=4, stats=IMAGENET),
    # J: AIMv2-L/14 at 448 (fixed position table: runs at its native size only)
    _hf("aimv2-l-448", "J", "apple/aimv2-large-patch14-448", "aimv2_vision_model", native=448, size=448,
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=8, patch_size=14,
        image_size=448, stats=CLIP),
    # K: C-RADIOv3-L (timm NaFlexViT: variable resolution natively), at 512
    ExpertConfig(name="c-radio-v3-l-512", family="timm", letter="K", source="naflexvit_large_patch16_radio_v3.c_radio",
                 pretrained=True, arch=dict(model_name="naflexvit_large_patch16_radio_v3"),
                 native_size=512, input_size=512, hidden_size=1024, grid=32, **FROM_SOURCE),
    # L: InternViT-300M-448px (v2.5, as in InternVL3-1B), the vision tower of the -hf checkpoint
    ExpertConfig(name="internvit-300m-448", family="hf_vision", letter="L", source="OpenGVLab/InternVL3-1B-hf",
                 pretrained=True, weights_prefix="model.vision_tower.",
                 arch=dict(model_type="internvl_vision", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, patch_size=[14, 14], image_size=[448, 448], layer_scale_init_value=0.1),
                 native_size=448, input_size=448, hidden_size=1024, grid=32, **IMAGENET),
]

_T = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
_TINY = [
    _hf("tiny-siglip2", "G", None, "siglip2_vision_model", native=64, size=64, patch_size=16, num_patches=16, _grid=4, stats=HALF, **_T),
    _hf("tiny-dinov2-reg", "H", None, "dinov2_with_registers", native=56, size=56, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=2, patch_size=14, image_size=56, num_register_tokens=4, mlp_ratio=2, _grid=4, stats=IMAGENET),
    _hf("tiny-dinov3", "I", None, "dinov3_vit", native=32, size=64, patch_size=16, image_size=32, num_register_tokens=4,
        _grid=4, stats=IMAGENET, **_T),  # RoPE: 2x2 native -> 4x4
    _hf("tiny-aimv2", "J", None, "aimv2_vision_model", native=56, size=56, patch_size=14, image_size=56, _grid=4, stats=CLIP, **_T),
    ExpertConfig(name="tiny-radio", family="timm", letter="K",
                 arch=dict(model_name="naflexvit_large_patch16_radio_v3", embed_dim=32, depth=2, num_heads=2),
                 native_size=64, input_size=64, hidden_size=32, grid=4, **FROM_SOURCE),
    ExpertConfig(name="tiny-internvit", family="hf_vision", letter="L",
                 arch=dict(model_type="internvl_vision", patch_size=[14, 14], image_size=[56, 56], **_T),
                 native_size=56, input_size=56, hidden_size=32, grid=4, **IMAGENET),
]
# More tiny generic experts (no letter): a SigLIP tower, a timm ViT (positions interpolated 48 -> 64)
# and a timm ConvNeXt, used by tests and tiny studies.
_TINY_EXTRA = [
    _hf("tiny-siglip", None, None, "siglip_vision_model", native=64, size=64, patch_size=16, image_size=64, _grid=4, stats=HALF, **_T),
    ExpertConfig(name="tiny-timm-vit", family="timm",
                 arch=dict(model_name="vit_base_patch16_224", img_size=48, embed_dim=32, depth=2, num_heads=2),
                 native_size=48, input_size=64, hidden_size=32, grid=4, **FROM_SOURCE),
    ExpertConfig(name="tiny-timm-convnext", family="timm",
                 arch=dict(model_name="convnext_atto", depths=[1, 1, 1, 1], dims=[8, 16, 32, 64]),
                 native_size=128, input_size=128, hidden_size=64, grid=4, **FROM_SOURCE),
]

GENERIC_PRESETS: dict[str, ExpertConfig] = {c.name: c for c in _FULL + _TINY + _TINY_EXTRA}
GENERIC_FULL_PRESETS = tuple(c.name for c in _FULL)
GENERIC_TINY_PRESETS = tuple(c.name for c in _TINY + _TINY_EXTRA)
GENERIC_LETTERS: dict[str, tuple[str, str]] = {f.letter: (f.name, t.name) for f, t in zip(_FULL, _TINY)}
