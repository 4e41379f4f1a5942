"""TPE (or another Optuna sampler) over continuous hyper-parameters around a fixed mixture.

The study has `budget.max_trials` slots; slot i is one planned trial whose hyper-parameters the
sampler picks when it starts (a retry of a slot reuses the params of its first attempt that
recorded them all)."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from explorer.strategies.base import Plan, Planned, Strategy, group_by_key, status_of
from explorer.study.spec import StudyError, StudySpec, TPEStrategy

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
}


def build_sampler(name: str, seed: int, options: dict[str, Any], source: str = "<study>") -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise StudyError(f"{source}: strategy.sampler: unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return SAMPLERS[name](seed=seed, **options)
    except (TypeError, ValueError) as err:
        raise StudyError(f"{source}: strategy.sampler_options: {err}") from None


class TPE(Strategy):
    opts: TPEStrategy

    def __init__(self, spec: StudySpec) -> None:
        super().__init__(spec)
        o = self.opts
        self.check_letters("experts", o.experts)
        if o.repeats != 1:
            raise self.fail("repeats", "seed repeats are for greedy and grid; a sampler needs repeats: 1")
        names = o.hparams if o.hparams is not None else list(self.space.hparams)
        if not names:
            raise self.fail("hparams", "no hyper-parameters to search (search_space.hparams is empty)")
        for n in names:
            if n not in self.space.hparams:
                raise self.fail("hparams", f"unknown hyper-parameter {n!r} (known: {', '.join(self.space.hparams)})")
        self.hparams = names
        if spec.budget.max_trials is None:
            raise StudyError(f"{spec.source}: budget.max_trials: a {o.sampler} study needs a number of trials")
        build_sampler(o.sampler, spec.seed, o.sampler_options, spec.source)

    def sampler(self) -> optuna.samplers.BaseSampler:
        return build_sampler(self.opts.sampler, self.spec.seed, self.opts.sampler_options, self.spec.source)

    def sampled_params(self) -> list[str]:
        return list(self.hparams)

    def distributions(self) -> dict[str, BaseDistribution]:
        dists = super().distributions()
        for n in self.hparams:
            r = self.space.hparams[n]
            if r.type == "float":
                dists[n] = FloatDistribution(r.low, r.high, log=r.log, step=r.step)
            elif r.type == "int":
                dists[n] = IntDistribution(int(r.low), int(r.high), log=r.log, step=int(r.step or 1))
            else:
                dists[n] = CategoricalDistribution(r.choices)
        return dists

    def _items(self) -> list[Planned]:
        assert self.spec.budget.max_trials is not None
        params = self.fixed_params(list(self.opts.experts))
        experts = "+".join(self.opts.experts)
        return [Planned(f"tpe/{i}", params, {"round": 0, "candidate": f"slot{i}", "seed": self.seeds[0],
                                             "experts": experts, "key": f"tpe/{i}"})
                for i in range(self.spec.budget.max_trials)]

    def sample_point(self) -> tuple[dict[str, Any], dict[str, Any]]:
        item = self._items()[0]
        params = dict(item.params)
        for n in self.hparams:  # the middle of each range, to validate the trial spec
            r = self.space.hparams[n]
            if r.type == "categorical":
                params[n] = r.choices[0]  # type: ignore[index]
            else:
                mid = (r.low * r.high) ** 0.5 if r.log else (r.low + r.high) / 2  # type: ignore[operator]
                params[n] = int(mid) if r.type == "int" else mid
        return params, item.user_attrs

    def total_planned(self) -> int:
        return len(self._items())

    def plan(self, trials: list[FrozenTrial]) -> Plan:
        groups = group_by_key(trials)
        items = self._items()
        statuses = {p.key: status_of(groups.get(p.key, []), self.spec.retries, self.spec.max_interruptions) for p in items}
        return Plan(items, statuses, 0, done=True)

    def summary(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        best = None
        for t in done:
            if best is None or self.better(t.value, best.value):
                best = t
        return {"best_value": best.value if best else None, "best_experts": "+".join(self.opts.experts),
                "best_params": dict(best.params) if best else None,
                "path": [{"round": 0, "candidates": [
                    {"candidate": t.user_attrs.get("candidate"), "params": t.params, "values": [t.value],
                     "n": 1, "mean": t.value, "std": None, "states": ["complete"]} for t in done]}],
                "round": 0, "stop_reason": None}
