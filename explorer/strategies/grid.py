"""Grid: every point of an ablation table (fusion x resolution x freeze x experts x hyper-params)."""
from __future__ import annotations

import itertools
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial

from explorer.strategies.base import Plan, Planned, Status, Strategy, group_by_key, mean_std, status_of
from explorer.strategies.fidelity import build_schedule
from explorer.study.spec import GridStrategy, StudySpec

_SECTIONS = ("fusion", "resolution", "freeze")
_SCALARS = (bool, int, float, str)


class Grid(Strategy):
    opts: GridStrategy

    def __init__(self, spec: StudySpec) -> None:
        super().__init__(spec)
        o = self.opts
        self.check_letters("experts", o.experts)
        for axis, values in o.axes.items():
            where = f"axes.{axis}"
            if not values:
                raise self.fail(where, "an axis needs at least one value")
            if len(set(map(repr, values))) != len(values):
                raise self.fail(where, "repeated value")
            if axis in _SECTIONS:
                for v in values:
                    self.check_choice(where, axis, str(v))
            elif axis == "experts":
                for v in values:
                    if not isinstance(v, str) or not v:
                        raise self.fail(where, f"expert sets are written like 'A+B', got {v!r}")
                    self.check_letters(where, v.split("+"))
            elif "." in axis:
                for v in values:
                    if not isinstance(v, _SCALARS):
                        raise self.fail(where, f"values must be numbers, strings or booleans, got {v!r}")
            else:
                raise self.fail(where, "unknown axis (known: fusion, resolution, freeze, experts, "
                                "or a dotted trial-spec path such as train.stages.sft.lr)")
        self.schedule = build_schedule(o, spec.objective.direction == "maximize", spec.source)

    def points(self) -> list[dict[str, Any]]:
        names = list(self.opts.axes)
        return [dict(zip(names, combo)) for combo in itertools.product(*self.opts.axes.values())]

    def _point_params(self, point: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        letters = point["experts"].split("+") if "experts" in point else list(self.opts.experts)
        params = self.fixed_params(letters)
        for axis, value in point.items():
            if axis != "experts":
                params[axis] = value
        return letters, params

    def _items(self) -> list[tuple[dict[str, Any], list[Planned]]]:
        out = []
        for point in self.points():
            letters, params = self._point_params(point)
            label = ",".join(f"{k}={v}" for k, v in point.items())
            items = []
            for seed in self.seeds:
                attrs = {"round": 0, "candidate": label, **self.seed_attrs(seed), "experts": "+".join(letters),
                         "key": f"grid/{label}/s{seed}"}
                items.append(Planned(attrs["key"], params, attrs))
            out.append((point, items))
        return out

    def sample_point(self) -> tuple[dict[str, Any], dict[str, Any]]:
        first = self._items()[0][1][0]
        return first.params, first.user_attrs

    def possible_params(self) -> list[dict[str, Any]]:
        return [ps[0].params for _, ps in self._items()]

    def total_planned(self) -> int:
        n = len(self.points())
        return (self.schedule.trials_for(n) if self.schedule is not None else n) * len(self.seeds)

    def distributions(self) -> dict[str, BaseDistribution]:
        dists = super().distributions()
        for axis, values in self.opts.axes.items():
            if "." in axis:
                dists[axis] = CategoricalDistribution(values)
        return dists

    def plan(self, trials: list[FrozenTrial]) -> Plan:
        groups = group_by_key(trials)
        status = lambda p: status_of(groups.get(p.key, []), self.spec.retries, self.spec.max_interruptions)  # noqa: E731
        if self.schedule is not None:  # every point is a candidate of one multi-fidelity round
            rungs = self.schedule.walk([ps for _, ps in self._items()], status, set(groups))
            return Plan(rungs.items, rungs.statuses, 0, done=True, stopped=rungs.stopped_trials())
        items = [p for _, ps in self._items() for p in ps]
        return Plan(items, {p.key: status(p) for p in items}, 0, done=True)

    def summary(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        plan = self.plan(trials)
        cands, best = [], None
        for point, items in self._items():
            sts = [plan.statuses.get(p.key, Status("stopped")) for p in items]  # stopped below the top rung
            values = [s.value for s in sts if s.state == "complete" and s.value is not None]
            mean, std = mean_std(values)
            c = {"candidate": items[0].user_attrs["candidate"], "experts": items[0].user_attrs["experts"],
                 "point": point, "params": items[0].params, "values": values, "n": len(values),
                 "mean": mean, "std": std, "states": [s.state for s in sts]}
            cands.append(c)
            if values and (best is None or self.better(mean, best["mean"])):
                best = c
        return {"best_value": best["mean"] if best else None, "best_experts": best["experts"] if best else None,
                "best_params": best["params"] if best else None, "path": [{"round": 0, "candidates": cands}],
                "round": 0, "stop_reason": None}
