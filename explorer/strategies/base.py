"""What every strategy shares: planned trials, their status in the stored trials, fixed params.

A strategy is deterministic: `plan(trials)` rebuilds its whole state (current round, best set)
from the stored trials alone, so a resumed or second controller plans exactly the same trials."""
from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable

from optuna.samplers import BaseSampler
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from explorer.study.spec import StudyError, StudySpec



@dataclass(frozen=True)
class Planned:
    """One planned trial: `key` identifies it across attempts; `params` are fixed params
    (hyper-parameters missing from them are sampled when the trial starts)."""

    key: str
    params: dict[str, Any]
    user_attrs: dict[str, Any]


@dataclass
class Status:
    state: str  # new | retry | waiting | running | complete | pruned | failed
    value: float | None = None
    trials: list[FrozenTrial] = field(default_factory=list)
    reason: str | None = None  # why a failed trial will not run again

    @property
    def resolved(self) -> bool:
        return self.state in ("complete", "pruned", "failed")


@dataclass
class Plan:
    items: list[Planned]
    statuses: dict[str, Status]
    round: int
    done: bool  # no round follows the current items
    stop_reason: str | None = None
    stopped: dict[int, int] = field(default_factory=dict)  # multi-fidelity: trial number -> rung it stopped at

    @property
    def finished(self) -> bool:
        return self.done and all(self.statuses[i.key].resolved for i in self.items)


# Settings every trial of a study shares are user attrs "fixed.<param>", not Optuna params: they
# are no search dimension (optuna-dashboard's importance and analytics views would weigh them).
FIXED_PREFIX = "fixed."


def trial_params(t: FrozenTrial) -> dict[str, Any]:
    """All of a trial's settings: its Optuna params and the study's constant ones."""
    fixed = {k[len(FIXED_PREFIX):]: v for k, v in t.user_attrs.items() if k.startswith(FIXED_PREFIX)}
    return {**fixed, **t.params}


def is_error_fail(t: FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and "error" in t.user_attrs


def status_of(trials: list[FrozenTrial], retries: int, max_interruptions: int | None = None) -> Status:
    """Where a planned trial stands, from all the stored attempts carrying its key. An attempt
    that FAILed without an error (pre-empted, or its controller died) is an interruption: it is
    re-run without spending a retry, without limit unless `max_interruptions` says otherwise."""
    if not trials:
        return Status("new")
    for t in trials:
        if t.state == TrialState.COMPLETE:
            return Status("complete", t.value, trials)
    for t in trials:
        if t.state == TrialState.PRUNED:
            last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
            return Status("pruned", last, trials)
    for state, name in ((TrialState.RUNNING, "running"), (TrialState.WAITING, "waiting")):
        if any(t.state == state for t in trials):
            return Status(name, None, trials)
    failed = [t for t in trials if is_error_fail(t)]
    # a failure restarted in place (Ray Train) already spent those restarts of the study's retries
    errors = sum(1 + int(t.user_attrs.get("restarts", 0)) for t in failed)
    interrupts = len(trials) - len(failed)
    if errors > retries:
        return Status("failed", None, trials, f"failed {errors} times (retries: {retries})")
    if max_interruptions is not None and interrupts > max_interruptions:
        return Status("failed", None, trials,
                      f"interrupted {interrupts} times (max_interruptions: {max_interruptions})")
    return Status("retry", None, trials)


def group_by_key(trials: Iterable[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    groups: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        key = t.user_attrs.get("key")
        if key is not None:
            groups.setdefault(key, []).append(t)
    return groups


def expert_params(letters: list[str], catalogue: list[str]) -> dict[str, bool]:
    return {f"expert_{x}": x in letters for x in catalogue}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Seed mean and spread; no spread (None, not 0.0) for a single seed."""
    if not values:
        return math.nan, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


class Strategy(ABC):
    schedule: Any = None  # a strategies.fidelity.Schedule when the study has rungs; None: every trial full

    def sampler(self) -> BaseSampler | None:
        """The Optuna sampler the study opens with; None: Optuna's default (planned trials are enqueued)."""
        return None

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.space = spec.space
        self.opts = spec.strategy
        self._check_fixed()

    # -- checks ---------------------------------------------------------------------------
    def fail(self, field_name: str, msg: str) -> StudyError:
        return StudyError(f"{self.spec.source}: strategy.{field_name}: {msg}")

    def check_letters(self, field_name: str, letters: list[str]) -> None:
        for x in letters:
            if x not in self.space.experts:
                raise self.fail(field_name, f"unknown expert letter {x!r} (catalogue: {', '.join(self.space.letters)})")
        if len(set(letters)) != len(letters):
            raise self.fail(field_name, f"repeated expert letter in {'+'.join(letters)}")

    def check_choice(self, field_name: str, section: str, name: str) -> None:
        known = getattr(self.space, section)
        if name not in known:
            raise self.fail(field_name, f"unknown {section} {name!r} (known: {', '.join(known)})")

    def _check_fixed(self) -> None:
        # every trial records its fusion: the strategy's, else the base trial's
        base_fusion = self.spec.base_trial_data.get("fusion") or {}
        self.fusion = self.opts.fusion or (base_fusion.get("name") if isinstance(base_fusion, dict) else None) \
            or "channel_concat"
        self.check_choice("fusion", "fusion", self.fusion)
        self.check_choice("resolution", "resolution", self.opts.resolution)
        self.check_choice("freeze", "freeze", self.opts.freeze)
        if self.opts.seeds is not None and len(self.opts.seeds) != self.opts.repeats:
            raise self.fail("seeds", f"{len(self.opts.seeds)} seeds for repeats={self.opts.repeats}")

    # -- shared helpers -------------------------------------------------------------------
    @property
    def seeds(self) -> list[int]:
        if self.opts.seeds is not None:
            return list(self.opts.seeds)
        base = int(self.spec.base_trial_data.get("seed", 0))
        return [base + i for i in range(self.opts.repeats)]

    def seed_attrs(self, seed: int) -> dict[str, int]:
        """A trial's seed and pre-alignment seed (seed_scope "sft": the base trial's, shared by all
        repeats, so they reuse the stage-1 cache)."""
        base = self.spec.base_trial_data
        fixed = base.get("align_seed")
        fixed = int(base.get("seed", 0)) if fixed is None else int(fixed)
        return {"seed": seed, "align_seed": fixed if self.opts.seed_scope == "sft" else seed}

    def fixed_params(self, letters: list[str]) -> dict[str, Any]:
        params: dict[str, Any] = expert_params(letters, self.space.letters)
        params["fusion"] = self.fusion
        params["resolution"] = self.opts.resolution
        params["freeze"] = self.opts.freeze
        return params

    def better(self, a: float, b: float) -> bool:
        return a > b if self.spec.objective.direction == "maximize" else a < b

    def distributions(self) -> dict[str, BaseDistribution]:
        """Distributions of every param a trial of this strategy records."""
        dists: dict[str, BaseDistribution] = {
            f"expert_{x}": CategoricalDistribution([False, True]) for x in self.space.letters
        }
        dists["fusion"] = CategoricalDistribution(list(self.space.fusion))
        dists["resolution"] = CategoricalDistribution(list(self.space.resolution))
        dists["freeze"] = CategoricalDistribution(list(self.space.freeze))
        return dists

    def constant_params(self) -> dict[str, Any]:
        """Fixed params with the same value in every trial the study can plan."""
        rows, sampled = self.possible_params(), set(self.sampled_params())
        return {k: v for k, v in rows[0].items()
                if k not in sampled and all(k in r and repr(r[k]) == repr(v) for r in rows[1:])}

    def possible_params(self) -> list[dict[str, Any]]:
        """Fixed params of trials that, between them, show every value each param can take."""
        return [self.sample_point()[0]]

    def sampled_params(self) -> list[str]:
        """Params the sampler picks when a trial starts (the rest are fixed when planned)."""
        return []

    # -- the strategy proper --------------------------------------------------------------
    @abstractmethod
    def sample_point(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(params, user_attrs) of a representative trial, to validate the trial spec early."""

    @abstractmethod
    def plan(self, trials: list[FrozenTrial]) -> Plan:
        """The current round's planned trials with their status, rebuilt from `trials`."""

    @abstractmethod
    def total_planned(self) -> int:
        """How many planned trials a complete study has (an upper bound when it may stop early)."""

    @abstractmethod
    def summary(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        """best_value, best_experts, best_params, path (per-round candidate stats)."""
