"""Load and validate a search space: the expert catalogue (letters A-F), fusion strategies,
resolution recipes, freeze settings and hyper-parameter ranges."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainers.spec import read_yaml_mapping

HERE = Path(__file__).resolve().parent
Scale = Literal["full", "tiny"]


class SearchSpaceError(ValueError):
    """A bad search space: one line naming the source and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpertChoice(_Strict):
    name: str
    family: str
    task: str = ""
    full: str  # full-size preset name in experts.PRESETS
    tiny: str  # tiny random-init preset name
    # per scale, a whole expert declaration (experts.ExpertConfig fields) when full/tiny names no preset
    define: dict[Scale, dict[str, Any]] = Field(default_factory=dict)

    def preset(self, scale: Scale) -> str:
        return self.full if scale == "full" else self.tiny


class FusionChoice(_Strict):
    options: dict[str, Any] = Field(default_factory=dict)


class PerScale(_Strict):
    full: int = Field(gt=0)
    tiny: int = Field(gt=0)


class ResolutionRecipe(_Strict):
    """input_size/grid/highres set on the experts in `applies_to` (all experts when None)."""

    input_size: PerScale | None = None
    grid: PerScale | None = None  # token grid side at this resolution (the paper's 576/1024/2304 tokens)
    highres: Literal["interpolate", "tiled", "dynamic"] | None = None
    max_tiles: int | None = Field(default=None, ge=1)  # highres dynamic: tiles per image, plus a thumbnail
    applies_to: list[str] | None = None


class FreezeSetting(_Strict):
    experts: bool | None = None  # expert freeze during SFT (None: the preset's/base trial's)
    llm: bool | None = None
    applies_to: list[str] | None = None


class HParamRange(_Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> "HParamRange":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty `choices`")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} needs `low` and `high`")
            if self.low > self.high:
                raise ValueError(f"low {self.low} > high {self.high}")
            if self.log and self.low <= 0:
                raise ValueError("log ranges need low > 0")
        return self

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in (self.choices or [])
        return self.low <= value <= self.high  # type: ignore[operator]


class SearchSpace(_Strict):
    scale: Scale = "full"
    experts: dict[str, ExpertChoice] = Field(min_length=1)
    fusion: dict[str, FusionChoice] = Field(default_factory=lambda: {"channel_concat": FusionChoice()})
    resolution: dict[str, ResolutionRecipe] = Field(default_factory=lambda: {"preset": ResolutionRecipe()})
    freeze: dict[str, FreezeSetting] = Field(default_factory=lambda: {"preset": FreezeSetting()})
    hparams: dict[str, HParamRange] = Field(default_factory=dict)

    @field_validator("experts")
    @classmethod
    def _letters(cls, v: dict[str, ExpertChoice]) -> dict[str, ExpertChoice]:
        for letter in v:
            if len(letter) != 1 or not letter.isupper():
                raise ValueError(f"expert keys are single capital letters, got {letter!r}")
        return v

    @model_validator(mode="after")
    def _applies_to_known(self) -> "SearchSpace":
        for section in ("resolution", "freeze"):
            for name, item in getattr(self, section).items():
                for letter in item.applies_to or []:
                    if letter not in self.experts:
                        raise ValueError(
                            f"{section}.{name}.applies_to: unknown expert letter {letter!r} "
                            f"(known: {', '.join(self.experts)})"
                        )
        return self

    @property
    def letters(self) -> list[str]:
        return list(self.experts)

    def preset(self, letter: str) -> str:
        return self.experts[letter].preset(self.scale)


def _format(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {field}: {msg}{more}"


def resolve_path(ref: str, base_dir: Path | None = None) -> Path:
    """A search space reference: a bundled name (`eagle`), or a path (relative to base_dir)."""
    bundled = HERE / f"{ref}.yaml"
    if "/" not in ref and not ref.endswith((".yaml", ".yml")) and bundled.is_file():
        return bundled
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        known = sorted(p.stem for p in HERE.glob("*.yaml"))
        raise SearchSpaceError(f"{ref}: search space not found (bundled: {', '.join(known)})")
    return path


def _read(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "a search space", SearchSpaceError)


def _merge(data: dict[str, Any], base_dir: Path | None, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Resolve `extends:` chains: sections of the child replace the parent's whole sections."""
    data = dict(data)
    parent_ref = data.pop("extends", None)
    if parent_ref is None:
        return data
    parent_path = resolve_path(str(parent_ref), base_dir)
    if parent_path in seen:
        raise SearchSpaceError(f"{parent_path}: `extends` loops back on itself")
    parent = _merge(_read(parent_path), parent_path.parent, seen + (parent_path,))
    parent.update(data)
    return parent


def parse_search_space(data: dict[str, Any], source: str = "<search space>", base_dir: Path | None = None) -> SearchSpace:
    merged = _merge(data, base_dir)
    try:
        return SearchSpace.model_validate(merged)
    except ValidationError as err:
        raise SearchSpaceError(_format(source, err)) from None


def load_search_space(ref: str | Path | dict[str, Any], base_dir: Path | None = None) -> SearchSpace:
    """Load a search space from a bundled name, a YAML path or an inline mapping."""
    if isinstance(ref, dict):
        return parse_search_space(ref, "search_space", base_dir)
    path = resolve_path(str(ref), base_dir)
    return parse_search_space(_read(path), str(path), path.parent)
