"""The trial spec: one YAML file that fully determines a trial (the explorer writes it, a trial reads it)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Template = Literal["plain", "vicuna_v1", "llama3", "chatml"]
Recipe = Literal["baseline", "eagle"]
Strategy = Literal["ddp", "deepspeed_zero2", "deepspeed_zero3"]
StageName = Literal["pretrain", "align_expert", "align_projector", "sft"]
SkillName = Literal["caption", "classify", "mask", "rotation", "read", "count"]  # trainers/skills/tasks.py
ScorerProfile = Literal["official", "lmms_eval"]  # trainers/eval/benchmarks: whose scoring rules

# Stages each recipe runs, in order. baseline = LLaVA-1.5; eagle = pre-alignment (1, 2) + SFT (3).
RECIPE_STAGES: dict[str, tuple[str, ...]] = {
    "baseline": ("pretrain", "sft"),
    "eagle": ("align_expert", "align_projector", "sft"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertEntry(_Strict):
    """An expert of the mixture: a preset from experts/ plus per-trial overrides (None = preset's)."""

    preset: str
    # a whole expert declaration (experts.ExpertConfig fields) for one with no preset; `preset` names it
    define: dict[str, Any] | None = None
    source: str | None = None
    pretrained: bool | None = None
    input_size: int | None = Field(default=None, gt=0)
    grid: int | None = Field(default=None, gt=0)  # output token grid side (resolution ablations change it)
    highres: Literal["interpolate", "tiled", "dynamic"] | None = None
    max_tiles: int | None = Field(default=None, ge=1)  # highres=dynamic
    freeze: bool | None = None  # during SFT; pre-alignment stages freeze by recipe
    grad_checkpointing: bool | None = None
    # skilled init: start from the preset pre-trained on a synthetic skill (trainers/skills; tiny
    # presets), cached per machine: True its family's own, a skill name any other (a permuted
    # design); False: the preset's own weights (random init for tiny ones)
    skill: bool | SkillName = False

    @field_validator("skill", mode="before")
    @classmethod
    def _skill_name(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in get_args(SkillName):
            raise ValueError(f"unknown skill {v!r}; give true (the family's own) or one of "
                             f"{', '.join(get_args(SkillName))}")
        return v


class FusionSpec(_Strict):
    name: str = "channel_concat"
    options: dict[str, Any] = Field(default_factory=dict)


class ProjectorSpec(_Strict):
    type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"


class LLMSpec(_Strict):
    preset: str | None = None  # e.g. "tiny-llama" (random init, tokenizer built from the data)
    source: str | None = None  # hub id or local directory of a causal LM
    template: Template = "vicuna_v1"
    freeze: bool = False  # during SFT
    grad_checkpointing: bool | None = None  # None: on for a source (full-size) LLM, off for tiny presets
    max_length: int = Field(default=512, gt=0)  # text tokens; + image tokens must fit the LLM's positions
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"  # flash: needs flash-attn

    @property
    def checkpointing(self) -> bool:
        return self.grad_checkpointing if self.grad_checkpointing is not None else self.source is not None

    @model_validator(mode="after")
    def _one_of(self) -> "LLMSpec":
        if (self.preset is None) == (self.source is None):
            raise ValueError("give exactly one of llm.preset or llm.source")
        return self


class SyntheticSpec(_Strict):
    """Generate the datasets on first use (deterministic by seed) instead of reading them."""

    seed: int = 0
    image_size: int = Field(default=64, gt=0)
    n_pretrain: int = Field(default=512, gt=0)
    n_sft: int = Field(default=512, gt=0)
    n_heldout: int = Field(default=64, gt=0)
    n_eval: int = Field(default=32, gt=0)  # items per synthetic benchmark
    dir: str | None = None  # default: <cache_dir>/synthetic/<hash>


class DataSpec(_Strict):
    synthetic: SyntheticSpec | None = None
    pretrain: str | None = None  # LLaVA-format json/jsonl (captions)
    sft: str | None = None  # LLaVA-format json/jsonl (instructions)
    heldout: str | None = None  # LLaVA-format json/jsonl used for the held-out loss
    image_folder: str | None = None
    on_bad_image: Literal["error", "skip"] = "error"
    on_too_long: Literal["truncate", "error"] = "truncate"  # over llm.max_length: counted cut, or an error
    num_workers: int = Field(default=0, ge=0)  # DataLoader worker processes per rank
    group_by_length: bool = False  # modality-length grouping of micro batches within each global batch
    packing: Literal["off", "sft", "all"] = "off"  # padding-free packed micro batches (varlen attention)
    # pre-alignment and SFT on one fixed, seeded share of their records (a cheap fidelity; the
    # held-out loss and the benchmarks stay whole); the same subset for every trial of a study
    fraction: float = Field(default=1.0, gt=0, le=1)
    fraction_seed: int = 0

    @model_validator(mode="after")
    def _some_data(self) -> "DataSpec":
        if self.synthetic is None and (self.pretrain is None or self.sft is None):
            raise ValueError("data needs either `synthetic` or both `pretrain` and `sft` files")
        return self


class StageSpec(_Strict):
    """Hyper-parameters of one stage. lr_* = None falls back to `lr`; which modules train is set by
    the recipe (and, for sft, by the trial's freeze settings)."""

    lr: float = Field(default=1e-3, gt=0)
    lr_llm: float | None = Field(default=None, gt=0)
    lr_projector: float | None = Field(default=None, gt=0)
    lr_vision: float | None = Field(default=None, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)  # caps the optimizer steps
    global_batch_size: int = Field(default=16, gt=0)
    micro_batch_size: int = Field(default=4, gt=0)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)


def _default_stages() -> dict[str, StageSpec]:
    return {
        "pretrain": StageSpec(lr=1e-3),
        "align_expert": StageSpec(lr=1e-3, lr_vision=2e-5),
        "align_projector": StageSpec(lr=1e-3),
        "sft": StageSpec(lr=2e-5),
    }


class FeatureCacheSpec(_Strict):
    """Stage 2 (align_projector) reads each frozen expert's features from a shared on-disk cache
    (trainers/caches/features.py) instead of running the expert; max_gb bounds the cache directory
    (least recently used entries are evicted, and a trial whose own entries exceed it fails)."""

    enabled: bool = False
    max_gb: float = Field(default=50.0, gt=0)


class TrainSpec(_Strict):
    recipe: Recipe = "eagle"
    strategy: Strategy = "ddp"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    checkpoint_every: int = Field(default=50, gt=0)  # optimizer steps
    stages: dict[StageName, StageSpec] = Field(default_factory=_default_stages)
    align_llm: LLMSpec | None = None  # LLM used in pre-alignment stage 1 (None: the trial's LLM)
    feature_cache: FeatureCacheSpec = Field(default_factory=FeatureCacheSpec)

    @model_validator(mode="after")
    def _fill(self) -> "TrainSpec":
        for name, spec in _default_stages().items():
            self.stages.setdefault(name, spec)
        return self


class BootstrapSpec(_Strict):
    """Per-item bootstrap intervals (trainers/eval/bootstrap.py). The seed is the same for every
    trial of a study (not the trial's seed), so trials on the same items draw the same resamples and
    compare paired."""

    resamples: int = Field(default=1000, ge=0)  # 0: no intervals
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0, lt=1)


class EvalSpec(_Strict):
    benchmarks: list[str] = Field(default_factory=list)  # empty: held-out loss only
    limit: int | None = Field(default=None, gt=0)  # slim subsets: N items per benchmark
    max_new_tokens: int = Field(default=16, gt=0)
    batch_size: int = Field(default=8, gt=0)
    interval_steps: int | None = Field(default=None, gt=0)  # also evaluate every N SFT steps (for pruners)
    data_root: str | None = None  # where real benchmark copies live (synthetic suite otherwise)
    objective: str = "avg"  # "avg" (the paper's Avg column), "weighted", "heldout_loss" or a benchmark score key
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)  # objective "weighted"; 0 leaves one out
    scorer_profile: ScorerProfile = "official"  # the benchmarks' official scripts, or lmms-eval's rules
    blind: bool = False  # also score every benchmark with blank images (how much needs the image)
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec)
    # harness lmms-eval (the `lmms` extra, trainers/eval/lmms_objective.py): lmms-eval's own tasks
    # and scorers instead of eval.benchmarks; its scores are "<task>" (the task's first metric) and
    # "<task>/<metric>", the objective "avg" is their plain mean
    harness: Literal["builtin", "lmms-eval"] = "builtin"
    tasks: list[str] = Field(default_factory=list)
    include_path: str | None = None  # a folder of lmms-eval task files

    def scored(self) -> list[str]:
        """What the final evaluation scores: lmms-eval tasks or benchmarks (empty: held-out loss only)."""
        return list(self.tasks) if self.harness == "lmms-eval" else list(self.benchmarks)


class TrialSpec(_Strict):
    name: str = "trial"
    seed: int = 0  # SFT (and everything but pre-alignment)
    align_seed: int | None = None  # pre-alignment stages (stage-1 cache key included); None: seed
    skill_seed: int = 0  # the skilled experts' pre-training (experts[i].skill)
    experts: list[ExpertEntry] = Field(min_length=1)
    fusion: FusionSpec = Field(default_factory=FusionSpec)
    projector: ProjectorSpec = Field(default_factory=ProjectorSpec)
    llm: LLMSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    cache_dir: str | None = None  # shared stage-1 cache and synthetic data; default: <out>/../cache


def seed_for(spec: TrialSpec, stage: str) -> int:
    """The seed of a stage: pre-alignment (pretrain, align_expert, align_projector) takes align_seed,
    so repeats that vary only the SFT seed share the stage-1 cache."""
    if stage != "sft" and spec.align_seed is not None:
        return spec.align_seed
    return spec.seed


class SpecError(ValueError):
    """A bad trial spec: the message is one line naming the file and the field."""


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {field}: {msg}{extra}"


def parse_trial_spec(data: dict[str, Any], source: str = "<trial spec>") -> TrialSpec:
    try:
        return TrialSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(source, err)) from None


def read_yaml_mapping(path: Path, what: str, error: type[Exception] = SpecError,
                      where: str | None = None) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; `error` with one line (prefixed `where`) otherwise."""
    prefix = where or str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise error(f"{prefix}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise error(f"{prefix}: {what} is a mapping at the top level")
    return data


def load_trial_spec(path: str | Path) -> TrialSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: trial spec not found")
    return parse_trial_spec(read_yaml_mapping(path, "a trial spec"), str(path))


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ, each with both values (shortened)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out += changed_fields(old.get(key, "<unset>"), new.get(key, "<unset>"), sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in changed_fields(a, b, f"{path}.{i}")]
    if old == new:
        return []

    def short(v: Any) -> str:
        text = json.dumps(v)
        return text if len(text) <= 40 else text[:37] + "..."

    return [f"{path or '(top level)'} ({short(old)} -> {short(new)})"]


def dump_trial_spec(spec: TrialSpec, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
