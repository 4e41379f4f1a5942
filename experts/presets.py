"""Named experts: the paper's six at full size (all 32x32 = 1024 tokens) and tiny random-init
versions of the same architectures (4x4 = 16 tokens) for CPU tests and tiny studies."""
from __future__ import annotations

from experts.config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ExpertConfig

IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
CLIP = {"mean": CLIP_MEAN, "std": CLIP_STD}

_FULL = [  # activation checkpointing on: a trainable expert at 1024 px does not fit without it
    ExpertConfig(  # A: CLIP ViT-L/14-336 with positions interpolated to 448 -> 32x32; LLaVA's penultimate layer
        name="clip-l-448", family="clip", letter="A", source="openai/clip-vit-large-patch14-336", pretrained=True,
        arch=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
        native_size=336, input_size=448, hidden_size=1024, grid=32, align="none", feature_layer=-2, grad_checkpointing=True, **CLIP),
    ExpertConfig(  # B: CLIP ConvNeXt-XXL (LAION-2B soup, 256 px), run at 1024: stride 32 -> 32x32
        name="convnext-xxl-1024", family="convnext", letter="B", source="convnext_xxlarge.clip_laion2b_soup",
        pretrained=True, arch=dict(model_name="convnext_xxlarge"),
        native_size=256, input_size=1024, hidden_size=3072, grid=32, align="none", grad_checkpointing=True, **CLIP),
    ExpertConfig(  # C: SAM ViT-L image encoder at 1024: neck 64x64x256 -> unshuffle -> 32x32x1024
        name="sam-l-1024", family="sam", letter="C", source="facebook/sam-vit-large", pretrained=True,
        arch=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23],
                  image_size=1024, patch_size=16, window_size=14, output_channels=256, mlp_dim=4096),
        native_size=1024, input_size=1024, hidden_size=256, grid=32, align="unshuffle", grad_checkpointing=True, **IMAGENET),
    ExpertConfig(  # D: DINOv2 ViT-L/14 (positions for 518) at 448 -> 32x32
        name="dinov2-l-448", family="dinov2", letter="D", source="facebook/dinov2-large", pretrained=True,
        arch=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=518,
                  layerscale_value=1e-5, mlp_ratio=4),
        native_size=518, input_size=448, hidden_size=1024, grid=32, align="none", grad_checkpointing=True, **IMAGENET),
    ExpertConfig(  # E: Pix2Struct-Large encoder at 1024: 64x64 patches of 16 -> 32x32 (per-image standardisation)
        name="pix2struct-l-1024", family="pix2struct", letter="E", source="google/pix2struct-large", pretrained=True,
        arch=dict(hidden_size=1536, patch_embed_hidden_size=768, d_ff=3968, d_kv=64, num_hidden_layers=18,
                  num_attention_heads=24, seq_len=4096, dense_act_fn="gelu_new"),
        native_size=1024, input_size=1024, hidden_size=1536, grid=32, align="resize", grad_checkpointing=True, **IMAGENET),
    # F: EVA-02-L as a detection backbone: patch 16 at 1024 -> 64x64 -> resized to 32x32. EVA-02 was
    # MIM-trained against EVA-CLIP targets and its checkpoints expect CLIP's mean/std (timm, mmpretrain).
    ExpertConfig(
        name="eva02-l-1024", family="eva02", letter="F", source="eva02_large_patch14_448.mim_m38m_ft_in22k_in1k",
        pretrained=True, arch=dict(model_name="eva02_large_patch14_448", img_size=1024, patch_size=16),
        native_size=1024, input_size=1024, hidden_size=1024, grid=32, align="resize", grad_checkpointing=True, **CLIP),
]

# Tiny twins: same classes, random init, 4x4 grid, each reaching it by a different path.
_TINY = [
    ExpertConfig(  # 48 px native (3x3) interpolated to 64 px -> 4x4, no alignment
        name="tiny-clip", family="clip", letter="A",
        arch=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=48, patch_size=16, projection_dim=32, hidden_act="quick_gelu"),
        native_size=48, input_size=64, hidden_size=32, grid=4, align="none", feature_layer=-2, **CLIP),
    ExpertConfig(  # stride 32 at 128 px -> 4x4
        name="tiny-convnext", family="convnext", letter="B",
        arch=dict(model_name="convnext_xxlarge", depths=[1, 1, 1, 1], dims=[8, 16, 32, 64]),
        native_size=128, input_size=128, hidden_size=64, grid=4, align="none", **CLIP),
    ExpertConfig(  # 64 px / patch 8 -> 8x8 neck x16 -> unshuffle -> 4x4 x64
        name="tiny-sam", family="sam", letter="C",
        arch=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1],
                  image_size=64, patch_size=8, window_size=4, output_channels=16, mlp_dim=64),
        native_size=64, input_size=64, hidden_size=16, grid=4, align="unshuffle", **IMAGENET),
    ExpertConfig(  # 56 px / patch 14 -> 4x4
        name="tiny-dinov2", family="dinov2", letter="D",
        arch=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56, mlp_ratio=2),
        native_size=56, input_size=56, hidden_size=48, grid=4, align="none", **IMAGENET),
    ExpertConfig(  # 96 px / patch 16 -> 6x6 -> resized to 4x4; row/col tables of 16 (mean/std unused: per-image)
        name="tiny-pix2struct", family="pix2struct", letter="E",
        arch=dict(hidden_size=32, patch_embed_hidden_size=768, d_ff=64, d_kv=16, num_hidden_layers=2,
                  num_attention_heads=2, seq_len=16),
        native_size=96, input_size=96, hidden_size=32, grid=4, align="resize", **IMAGENET),
    ExpertConfig(  # 64 px / patch 8 -> 8x8 -> resized to 4x4
        name="tiny-eva02", family="eva02", letter="F",
        arch=dict(model_name="eva02_large_patch14_448", img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2),
        native_size=64, input_size=64, hidden_size=32, grid=4, align="resize", **CLIP),
]

from experts.presets_generic import GENERIC_PRESETS  # noqa: E402  (letters G-L and tiny generic ones)

PRESETS: dict[str, ExpertConfig] = {c.name: c for c in _FULL + _TINY} | GENERIC_PRESETS
FULL_PRESETS = tuple(c.name for c in _FULL)
TINY_PRESETS = tuple(c.name for c in _TINY)
LETTERS: dict[str, tuple[str, str]] = {f.letter: (f.name, t.name) for f, t in zip(_FULL, _TINY)}
