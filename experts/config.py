"""Declarative description of one vision expert (what it is, how it sees, what it returns)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experts.errors import ExpertConfigError

Family = Literal["clip", "convnext", "sam", "dinov2", "pix2struct", "eva02", "hf_vision", "timm"]
Align = Literal["none", "resize", "unshuffle"]
HighRes = Literal["interpolate", "tiled", "dynamic"]
Attention = Literal["sdpa", "eager"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ExpertConfig(BaseModel):
    """One expert. `arch` holds architecture kwargs (transformers config or timm kwargs) used for
    random init and to override a hub config; `source` is a hub id, a timm model name or a local
    directory; `pretrained=True` means weights must be loaded from `source` (never a silent
    random init)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    family: Family
    letter: str | None = None  # the paper's letter (A-F) when the preset is one of the six
    source: str | None = None
    pretrained: bool = False
    arch: dict[str, Any] = Field(default_factory=dict)
    native_size: int = Field(gt=0)  # resolution the weights were trained at
    input_size: int = Field(gt=0)  # resolution the expert is run at
    hidden_size: int = Field(gt=0)  # width of the backbone's features
    grid: int = Field(gt=0)  # output token grid side (grid*grid tokens)
    align: Align = "none"
    highres: HighRes = "interpolate"
    # None: read from the source's own preprocessing config (generic families hf_vision / timm)
    mean: tuple[float, float, float] | None = CLIP_MEAN
    std: tuple[float, float, float] | None = CLIP_STD
    freeze: bool = True
    grad_checkpointing: bool = False
    attention: Attention = "sdpa"  # transformers backbones: fused SDPA kernels (eager: the reference maths)
    max_tiles: int = Field(default=6, ge=1)  # highres=dynamic: tiles per image (plus a thumbnail)
    feature_layer: int = -1  # index into the hidden states (-2: penultimate, as LLaVA uses)
    weights_prefix: str | None = None  # hf_vision: the vision tower's key prefix in a composite checkpoint

    @model_validator(mode="after")
    def _check(self) -> "ExpertConfig":
        if self.pretrained and not self.source:
            raise ValueError(f"expert {self.name!r}: pretrained=True needs a source (hub id, timm name or local path)")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"expert {self.name!r}: give both mean and std, or neither (read from the source)")
        return self

    @classmethod
    def declared(cls, data: dict[str, Any]) -> "ExpertConfig":
        """An expert declared in YAML (no preset); a bad field is one ExpertConfigError line."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "config"
            raise ExpertConfigError(f"expert {data.get('name')!r}: {field}: {err['msg']}") from None

    def with_overrides(self, **overrides: Any) -> "ExpertConfig":
        """A copy with some fields replaced, validated again (None values are ignored). A bad value
        is a one-line ExpertConfigError (a ValueError) naming the expert and the field."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return ExpertConfig.declared(data)
