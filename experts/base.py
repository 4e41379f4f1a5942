"""VisionExpert: the common frame every family fills in (preprocess -> encode -> align -> tokens)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from experts.align import GridAligner, aligned_width
from experts.config import ExpertConfig
from experts.errors import ExpertConfigError, ExpertInputError
from experts.highres import split_tiles, stitch_tiles

logger = logging.getLogger(__name__)

CONFIG_FILE = "expert.json"
WEIGHTS_FILE = "model.safetensors"


def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """[B, g*g, C] patch tokens (row-major) -> [B, C, g, g]."""
    b, n, c = tokens.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{n} patch tokens do not form a square grid")
    return tokens.transpose(1, 2).reshape(b, c, g, g)


class VisionExpert(nn.Module):
    """One vision encoder. Families implement `build_backbone`, `load_backbone`, `patch_stride`,
    `feature_width`, `encode` (and `export_arch`, `_set_backbone_checkpointing`)."""

    family: ClassVar[str] = ""

    def __init__(self, config: ExpertConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        if config.family != self.family:
            raise ExpertConfigError(f"expert {config.name!r}: family {config.family!r} given to the {self.family!r} expert")
        if config.mean is None:
            raise ExpertConfigError(f"expert {config.name!r}: no mean/std given and none read from its source; "
                                    "set mean and std in its config")
        self.config = config
        self.backbone = backbone if backbone is not None else self.build_backbone(config)
        self._check_sizes()
        width = self.feature_width()
        if width != config.hidden_size:
            raise ExpertConfigError(
                f"expert {config.name!r}: hidden_size={config.hidden_size} but the backbone's features are {width} wide"
            )
        self.feature_grid = self.grid_for(self.encode_size) * self.tiles_per_side
        self.out_dim = aligned_width(config.name, config.align, self.feature_grid, config.grid, width)
        if config.highres == "dynamic":  # pooled tiles ++ thumbnail (experts.tiling)
            if config.align == "unshuffle":
                raise ExpertConfigError(f"expert {config.name!r}: highres=dynamic needs align 'none' or 'resize'")
            self.out_dim *= 2
        self.aligner = GridAligner(config.align, config.grid)
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self._trainable = True
        self.set_trainable(not config.freeze)
        self.set_grad_checkpointing(config.grad_checkpointing)

    # ---- what a family provides -------------------------------------------------------------
    @classmethod
    def build_backbone(cls, config: ExpertConfig) -> nn.Module:
        """Random-init backbone from `config.arch`."""
        raise NotImplementedError

    @classmethod
    def resolve_config(cls, config: ExpertConfig) -> ExpertConfig:
        """The config with what the family reads from its source filled in (generic families)."""
        return config

    @classmethod
    def load_backbone(cls, config: ExpertConfig) -> nn.Module:
        """Backbone with weights from `config.source` (ExpertLoadError when they cannot be read)."""
        raise NotImplementedError

    def patch_stride(self) -> int:
        raise NotImplementedError

    def feature_width(self) -> int:
        raise NotImplementedError

    def backbone_native_size(self) -> int | None:
        """Resolution the backbone's position embeddings were built for (None: not applicable)."""
        return None

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, s, s] -> feature map [B, C, s/stride, s/stride]."""
        raise NotImplementedError

    def unused_prefixes(self) -> tuple[str, ...]:
        """Backbone parameter-name prefixes the returned features never reach (heads, final norms
        or blocks past feature_layer); they stay requires_grad=False so DDP sees no unused params."""
        return ()

    def later_layers(self, prefix: str, depth: int) -> tuple[str, ...]:
        """`prefix{i}.` for the blocks after hidden state `feature_layer` (0 = embeddings)."""
        fl = self.config.feature_layer
        if not -(depth + 1) <= fl <= depth:
            raise ExpertConfigError(f"expert {self.config.name!r}: feature_layer={fl} is outside the {depth + 1} hidden states")
        used = fl % (depth + 1)
        return tuple(f"{prefix}{i}." for i in range(used, depth))

    def export_arch(self) -> dict[str, Any]:
        """Full architecture kwargs, enough to rebuild the backbone with random init."""
        return dict(self.config.arch)

    def _set_backbone_checkpointing(self, flag: bool) -> None:
        raise NotImplementedError

    # ---- shared behaviour ----------------------------------------------------------------------
    @property
    def grid(self) -> int:
        return self.config.grid

    @property
    def num_tokens(self) -> int:
        return self.config.grid * self.config.grid

    @property
    def encode_size(self) -> int:
        c = self.config
        return c.native_size if c.highres in ("tiled", "dynamic") else c.input_size

    @property
    def tiles_per_side(self) -> int:
        c = self.config
        return c.input_size // c.native_size if c.highres == "tiled" else 1

    @property
    def trainable(self) -> bool:
        return self._trainable

    def grid_for(self, size: int) -> int:
        stride = self.patch_stride()
        if size % stride:
            raise ExpertConfigError(
                f"expert {self.config.name!r}: size {size} is not a multiple of the backbone stride {stride}"
            )
        return size // stride

    def _check_sizes(self) -> None:
        c = self.config
        native = self.backbone_native_size()
        if native is not None and native != c.native_size:
            raise ExpertConfigError(
                f"expert {c.name!r}: native_size={c.native_size} but the backbone was built for {native}"
            )
        if c.highres == "tiled" and c.input_size % c.native_size:
            raise ExpertConfigError(
                f"expert {c.name!r}: tiled input needs input_size ({c.input_size}) to be a multiple of "
                f"native_size ({c.native_size})"
            )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def check_images(self, images: torch.Tensor) -> None:
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            got = f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images) else type(images).__name__
            raise ExpertInputError(f"expert {self.config.name!r}: expected float images [B, 3, H, W] in [0, 1], got {got}")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        size = self.config.input_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.normalize(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        if self.config.highres == "dynamic":
            return self._forward_dynamic(images)
        # resize + normalise in fp32 (antialiased resize has no bf16 kernel on CPU), then the weights' dtype
        pixels = self.preprocess(images.float()).to(next(self.backbone.parameters()).dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._trainable):
            if self.config.highres == "tiled" and self.tiles_per_side > 1:
                tiles, k = split_tiles(pixels, self.config.native_size)
                fmap = stitch_tiles(self.encode(tiles), k)
            else:
                fmap = self.encode(pixels)
        return self.aligner(fmap)

    def _forward_dynamic(self, images: torch.Tensor) -> torch.Tensor:
        from experts.tiling import merge_dynamic, split_dynamic

        c = self.config
        crops, layouts = split_dynamic(images.to(next(self.backbone.parameters()).dtype), c.max_tiles, c.native_size)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._trainable):
            fmaps = self.encode(self.normalize(crops))
        return merge_dynamic(fmaps, layouts, c.grid, self.aligner)

    def set_trainable(self, flag: bool) -> None:
        """Unfreeze (True) or freeze (False): requires_grad, and eval mode while frozen."""
        self._trainable = bool(flag)
        unused = self.unused_prefixes()
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(self._trainable and not name.startswith(unused))
        if not self._trainable:
            self.backbone.eval()
        else:
            self.backbone.train(self.training)
        logger.info("expert %s: %s", self.config.name, "trainable" if flag else "frozen")

    def train(self, mode: bool = True) -> "VisionExpert":
        super().train(mode)
        if not self._trainable:
            self.backbone.eval()  # frozen experts keep dropout/norm statistics fixed
        return self

    def set_grad_checkpointing(self, flag: bool) -> None:
        self._set_backbone_checkpointing(bool(flag))
        self.config = self.config.with_overrides(grad_checkpointing=bool(flag))

    def save_pretrained(self, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write expert.json (full arch, random-init rebuildable) + model.safetensors: `state`, or this
        module's own (a trainer passes the state it gathered from ZeRO-3 partitions)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        cfg = self.config.model_dump()
        cfg.update(arch=self.export_arch(), pretrained=False, source=None)
        (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
        if state is None:
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"family": self.family})
        logger.info("saved expert %s to %s", self.config.name, out)
        return out

    def extra_repr(self) -> str:
        c = self.config
        return (f"name={c.name}, input={c.input_size}, feature_grid={self.feature_grid}, grid={c.grid}, "
                f"out_dim={self.out_dim}, trainable={self._trainable}")
