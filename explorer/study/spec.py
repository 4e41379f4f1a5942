"""The study file: a pydantic-validated YAML describing one sweep (strategy, search space, base
trial, objective, budget, resources, storage, tracking, pruner, backend).

Schema (every key optional unless marked):
    name: tiny_greedy                      # required; [A-Za-z0-9_.-]
    strategy:                              # required; one of
      {type: greedy, base: [A, B], candidates: [C, D, E, F], max_size: 6,
       stop_on_no_improvement: false, improvement: interval,   # or mean; the answer: the last
       repeats: 1, seeds: null, seed_scope: sft,              # round that improved
       tie_threshold: 0.05, resolve_ties: null,     # or {extra_seeds: 2, max_extra_trials: 6}
       fusion: null, resolution: preset, freeze: preset,   # fusion null: the base trial's
       fidelity: null}   # or {schedule: successive_halving|asha, min_fraction: 0.25, eta: 2,
                         #     eval_limits: null, early_stop: null|{alpha: 0.05, min_items: 20, every: 16}}
      {type: grid, experts: [A], axes: {fusion: [...], resolution: [...], freeze: [...],
       experts: ["A", "A+B"], train.stages.sft.lr: [1e-5, 2e-5]}, repeats: 1, fidelity: null, ...fixed}
      {type: tpe, experts: [A, B], sampler: tpe, sampler_options: {}, hparams: [names], ...fixed}
    search_space: eagle_tiny               # bundled name, path (relative to the study file) or mapping
    base_trial: trials/tiny.yaml           # required; path (relative to the study file) or mapping;
                                           # its relative data paths are resolved against its file
    objective: {metric: avg, direction: maximize}   # avg needs eval.benchmarks in the base trial
    budget: {max_trials: null, timeout_s: null}     # planned trials started / this process's run time
    resources: {nproc_per_trial: 1, max_concurrent_trials: 1, cpus_per_worker: 1, gpus_per_worker: 0,
                gpu_memory_gb: null}        # per GPU: `run` refuses a trial estimated over it (explorer.plan)
    retries: 0                             # failures (with an error) re-run this many times
    max_interruptions: null                # null: pre-empted/orphaned attempts re-run without limit
    storage: null                          # null: sqlite:///<workdir>/study.db
    tracking_uri: null                     # null: sqlite store in the workdir
    pruner: {type: none, options: {}}
    backend: local                         # local | ray | slurm (resources.slurm: partition, account,
                                           # qos, time_min, nodes, gpus_per_node, cpus_per_task, mem_gb,
                                           # signal_delay_s, extra)
    ray_address: null
    seed: 0                                # sampler seed
    heartbeat_interval_s: 30
    grace_period_s: 90                     # a silent trial of a dead controller elsewhere is re-run after this
    poll_interval_s: 1.0
    expect: null                           # or {answer: [A, B, E], path: [[A, B], [A, B, E]], rounds: 2}, written
                                           # before any run (docs/testbed.md)
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from experts.errors import UnknownNameError
from explorer.backends.registry import backend_name
from explorer.study.stats import DEFAULT_TIE_THRESHOLD
from search_spaces import SearchSpace
from trainers.spec import SpecError, parse_trial_spec, read_yaml_mapping


class StudyError(ValueError):
    """A bad study file: one line naming the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Fixed(_Strict):
    """Settings held fixed for every trial of the strategy (names from the search space)."""

    fusion: str | None = None  # None: the base trial's fusion
    resolution: str = "preset"
    freeze: str = "preset"
    repeats: int = Field(default=1, ge=1)  # runs per candidate with different seeds
    seeds: list[int] | None = None  # explicit seeds (length = repeats); default base seed + i
    # which stages the repeats' seeds apply to: "sft" (pre-alignment keeps the base trial's
    # align_seed, else its seed, so repeats share the stage-1 cache) or "all"
    seed_scope: Literal["sft", "all"] = "sft"
    tie_threshold: float = Field(default=DEFAULT_TIE_THRESHOLD, gt=0, lt=0.5)  # tied when P(beats the leader) >= this


class ResolveTies(_Strict):
    """Racing: more seeds of only the tied leaders of a round before it is decided."""

    extra_seeds: int = Field(default=2, ge=1)  # per tied candidate
    max_extra_trials: int = Field(default=6, ge=2)  # per round


class EarlyStopSpec(_Strict):
    """Stop a rung's evaluation when the candidate is clearly behind the round's leader at that
    rung: one-sided Wilcoxon signed-rank test over the paired per-item scores."""

    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_items: int = Field(default=20, ge=5)  # paired items before the first test
    every: int = Field(default=16, gt=0)  # items between tests


class ProxySpec(_Strict):
    """What the rungs below the top train instead of the trial itself: another LLM (a preset or a
    local path, with its own template) and/or one fixed, seeded share of the pre-alignment and SFT
    data. Those rungs continue one another in a directory of their own; the top rung trains the
    trial itself from the start, so the study's answer is always the real trial."""

    llm: dict[str, Any] | None = None  # an llm block as in a trial file; replaces the base trial's
    data_fraction: float = Field(default=1.0, gt=0, le=1)
    data_seed: int = 0

    @model_validator(mode="after")
    def _cheaper(self) -> "ProxySpec":
        if self.llm is None and self.data_fraction >= 1:
            raise ValueError("a proxy needs an llm or a data_fraction below 1 (else it is the trial itself)")
        return self


class FidelitySpec(_Strict):
    """Multi-fidelity rounds (explorer/fidelity.py): rungs at min_fraction * eta^r of the SFT steps."""

    schedule: Literal["successive_halving", "asha"] = "successive_halving"
    min_fraction: float = Field(default=0.25, gt=0, lt=1)
    eta: int = Field(default=2, ge=2)  # 1/eta of a rung's candidates go on to the next
    eval_limits: list[int] | None = None  # items per benchmark at each rung below the top; null: the base trial's
    early_stop: EarlyStopSpec | None = None
    # who goes on from a rung: the best ceil(n / eta) ("count"), or the leader and every candidate
    # its paired interval does not rule out, P(it beats the leader) >= alpha ("interval")
    promotion: Literal["count", "interval"] = "count"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    max_promoted: int | None = Field(default=None, ge=1)  # "interval": at most this many go on
    # "count": when the rung's leader beats every other candidate beyond the interval, it alone goes
    # on (straight to the top rung)
    decide_early: bool = False
    proxy: ProxySpec | None = None  # the rungs below the top train a cheaper proxy of the trial
    # where a greedy round is decided: at the top rung ("top"), or at the highest rung below it
    # ("below_top"), so that only the study's answer trains at full fidelity
    decide: Literal["top", "below_top"] = "top"


class GreedyStrategy(_Fixed):
    type: Literal["greedy"]
    base: list[str] = Field(default_factory=lambda: ["A", "B"])
    candidates: list[str] | None = None  # default: every catalogue letter not in base
    max_size: int | None = Field(default=None, gt=0)  # default: base + all candidates
    stop_on_no_improvement: bool = False
    # a round improves on the best so far when its leader beats it beyond the paired interval
    # ("interval"), or by its mean ("mean"); the answer is the last round that improved
    improvement: Literal["interval", "mean"] = "interval"
    resolve_ties: ResolveTies | None = None
    fidelity: FidelitySpec | None = None


class GridStrategy(_Fixed):
    type: Literal["grid"]
    experts: list[str] = Field(default_factory=lambda: ["A"])
    axes: dict[str, list[Any]] = Field(min_length=1)
    fidelity: FidelitySpec | None = None


class TPEStrategy(_Fixed):
    type: Literal["tpe"]
    experts: list[str] = Field(default_factory=lambda: ["A", "B"])
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    hparams: list[str] | None = None  # names from search_space.hparams; default all


StrategySpec = Annotated[Union[GreedyStrategy, GridStrategy, TPEStrategy], Field(discriminator="type")]


class Objective(_Strict):
    metric: str = "avg"
    direction: Literal["maximize", "minimize"] = "maximize"


class Budget(_Strict):
    max_trials: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)


class SlurmOptions(_Strict):
    """One SLURM job per trial attempt (backend: slurm): what sbatch is asked for."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = Field(default=24 * 60, gt=0)  # the job's time limit
    nodes: int = Field(default=1, gt=0)  # one torchrun per node, nproc_per_trial ranks each
    gpus_per_node: int = Field(default=0, ge=0)
    cpus_per_task: int | None = Field(default=None, gt=0)
    mem_gb: float | None = Field(default=None, gt=0)
    signal_delay_s: int = Field(default=120, gt=0)  # SIGTERM this long before the limit: checkpoint and requeue
    extra: dict[str, str | int | bool] = Field(default_factory=dict)  # more sbatch options, e.g. {constraint: h100}


class Resources(_Strict):
    nproc_per_trial: int = Field(default=1, gt=0)
    max_concurrent_trials: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=1, gt=0)
    gpus_per_worker: float = Field(default=0, ge=0)
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
    gpu_memory_gb: float | None = Field(default=None, gt=0)


class PrunerSpec(_Strict):
    type: str = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class Expectation(_Strict):
    """The answer the study should find, derived from the design before any run."""
    answer: list[str] = Field(min_length=1)  # the mixture the study should select
    # the selection path (optional): the base, then the leader of each round that improved
    path: list[list[str]] | None = None
    # greedy rounds run after the base (optional): the last one is the round that ended the study
    rounds: int | None = Field(default=None, ge=1)


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    strategy: StrategySpec
    search_space: str | dict[str, Any] = "eagle"
    base_trial: str | dict[str, Any]
    objective: Objective = Field(default_factory=Objective)
    budget: Budget = Field(default_factory=Budget)
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(default=0, ge=0)
    # interruptions (pre-emptions, dead controllers) never count as failures unless capped here
    max_interruptions: int | None = Field(default=None, ge=0)
    storage: str | None = None
    tracking_uri: str | None = None
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    backend: str = "local"  # a name of explorer.backends.registry.BACKENDS
    ray_address: str | None = None
    seed: int = 0
    heartbeat_interval_s: int = Field(default=30, gt=0)
    grace_period_s: int = Field(default=90, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    expect: Expectation | None = None

    _space: SearchSpace | None = PrivateAttr(default=None)
    _base_trial: dict[str, Any] | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="<study>")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        try:
            return backend_name(v)
        except UnknownNameError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _grace(self) -> "StudySpec":
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ValueError("grace_period_s must exceed heartbeat_interval_s")
        return self

    @model_validator(mode="after")
    def _expectation_in_strategy(self) -> "StudySpec":
        st, ex = self.strategy, self.expect
        if ex is None or st.type != "greedy":
            return self
        known = set(st.base) | set(st.candidates or [])
        for field, names in [("expect.answer", ex.answer), *((f"expect.path[{i}]", p) for i, p in enumerate(ex.path or []))]:
            if st.candidates is not None and (unknown := sorted(set(names) - known)):
                raise ValueError(f"{field}: {', '.join(unknown)} not in strategy.base or strategy.candidates")
            if not set(st.base) <= set(names):
                raise ValueError(f"{field}: a greedy study's mixtures all hold strategy.base ({', '.join(st.base)})")
            if st.max_size is not None and len(set(names)) > st.max_size:
                raise ValueError(f"{field}: {len(set(names))} experts, over strategy.max_size {st.max_size}")
        if ex.rounds is not None:
            # without max_size or candidates the bound is the search space's, checked by the strategy
            size = st.max_size if st.max_size is not None else (
                len(set(st.base) | set(st.candidates)) if st.candidates is not None else None)
            most, least = (None if size is None else size - len(st.base)), len(set(ex.answer)) - len(st.base)
            if ex.rounds < least or (most is not None and ex.rounds > most):
                cap = "" if most is None else f" and strategy.max_size allows at most {most}"
                raise ValueError(f"expect.rounds: {ex.rounds} rounds, but the answer needs at least {least}{cap}")
        return self

    @property
    def space(self) -> SearchSpace:
        if self._space is None:
            raise StudyError(f"{self._source}: study spec not resolved (use load_study/parse_study)")
        return self._space

    @property
    def base_trial_data(self) -> dict[str, Any]:
        if self._base_trial is None:
            raise StudyError(f"{self._source}: study spec not resolved (use load_study/parse_study)")
        return copy.deepcopy(self._base_trial)

    @property
    def source(self) -> str:
        return self._source

    def fingerprint(self) -> str:
        """What a resumed study must agree on: strategy, search space, objective."""
        strategy = self.strategy.model_dump(mode="json")
        for key, default in _LATER_DEFAULTS.items():  # studies created before these keys still resume
            if strategy.get(key, default) == default:
                strategy.pop(key, None)
        blob = json.dumps(
            {"strategy": strategy, "space": self.space.model_dump(mode="json"),
             "objective": self.objective.model_dump(mode="json")},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_LATER_DEFAULTS: dict[str, Any] = {"seed_scope": "sft", "tie_threshold": DEFAULT_TIE_THRESHOLD, "resolve_ties": None,
                                   "fidelity": None, "improvement": "interval"}


def validation_line(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if str(p) not in ("greedy", "grid", "tpe")]
    field = ".".join(loc) or "(top level)"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    if first["type"] == "union_tag_invalid":
        msg = "strategy.type must be one of greedy, grid, tpe"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if not loc and first["type"] == "value_error":  # a check across fields names its own field
        return f"{source}: {msg.removeprefix('Value error, ')}{more}"
    return f"{source}: {field}: {msg}{more}"


_PATH_KEYS = (("data", "pretrain"), ("data", "sft"), ("data", "heldout"), ("data", "image_folder"),
              ("eval", "data_root"), ("llm", "source"), ("cache_dir",))


def _absolutize(data: dict[str, Any], base_dir: Path) -> None:
    """Relative file paths of a base trial are relative to the file that holds them."""
    experts = data.get("experts")
    sources = [("experts", i, "source") for i in range(len(experts))] if isinstance(experts, list) else []
    for keys in (*_PATH_KEYS, *sources):
        node: Any = data
        for k in keys[:-1]:
            node = node[k] if isinstance(k, int) else node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(keys[-1]), str):
            continue
        value = node[keys[-1]]
        if value.startswith((".", "/")) or (base_dir / value).exists():
            node[keys[-1]] = str((base_dir / value).resolve())


def load_base_trial(ref: str | dict[str, Any], base_dir: Path, source: str) -> dict[str, Any]:
    """The base trial, validated as a trial spec before any strategy transforms it (so wrong types
    never reach their code); kept as the keys it gave, with typed values."""
    where = f"{source}: base_trial"
    if isinstance(ref, dict):
        data = copy.deepcopy(ref)
        _absolutize(data, base_dir)
    else:
        path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
        if not path.is_file():
            raise StudyError(f"{where}: file not found: {path}")
        where = f"{where}: {path}"
        data = read_yaml_mapping(path, "a trial spec", StudyError, where=where)
        _absolutize(data, path.parent)
    try:
        return parse_trial_spec(data, where).model_dump(mode="json", exclude_unset=True)
    except SpecError as err:
        raise StudyError(str(err)) from None
