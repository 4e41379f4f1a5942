"""Multi-fidelity rounds: a round's candidates train SFT to a fraction of their steps and are
evaluated at that rung; the weakest stop there, the rest continue from their checkpoints (the same
trial directory, trainers/stages/fidelity.py) to the next rung; the round is decided among the candidates
of its top rung (full fidelity) with the usual paired comparisons.

Every rung of a planned trial is its own stored trial: key "<key>@rung<r>" below the top, the
planned trial's own key at the top (so a study's answer is always a full-fidelity trial), and
user attr "trial_key" (the planned key) naming the directory they share. Like a strategy, a
schedule rebuilds its state from the stored trials alone:
- successive_halving: a rung is decided once all its candidates are resolved; the best
  ceil(n / eta) by seed mean go on (and any level with the last of them), or (promotion
  "interval") the leader and every candidate its paired interval does not rule out; a lone
  survivor goes straight to the top rung.
- asha (asynchronous, for many workers): a candidate goes on as soon as it is in the best
  floor(done / eta) of the rung's resolved candidates (ceil(n / eta) once the rung is complete);
  a promotion is never taken back (the next rung's trial is in the database).
A candidate whose evaluation was stopped early (behind the leader) never goes on."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from explorer.strategies.base import Planned, Status
from explorer.study import stats
from explorer.study.spec import FidelitySpec, StudyError
from explorer.study.handle import StoredStudy

RUNG_ATTR = "rung"  # user attrs of a rung trial: rung index, rung count, planned key
RUNGS_ATTR = "rungs"
TRIAL_KEY_ATTR = "trial_key"
STOPPED_ATTR = "eagle:stopped_at_rung"  # study system attr: {trial number: rung its candidate stopped at}
FIDELITY_ATTR = "fidelity"  # the trial's result.json "fidelity" block
ITEM_SCORES_ATTR = "eagle:item_scores"  # system attr: per-item scores of a rung below the top
PROXY_DIR = "/proxy"  # the proxy rungs of a planned trial share the directory <trial dir>__proxy


def is_proxy_rung(attrs: dict[str, Any], spec: FidelitySpec | None) -> bool:
    """A rung below the top of a study whose lower rungs train a proxy (strategy.fidelity.proxy)."""
    return (spec is not None and spec.proxy is not None and attrs.get(RUNG_ATTR) is not None
            and int(attrs[RUNG_ATTR]) < int(attrs[RUNGS_ATTR]) - 1)


def dir_key(attrs: dict[str, Any], spec: FidelitySpec | None) -> str | None:
    """The directory key of a trial: its planned trial's (every rung continues the one before),
    with PROXY_DIR for proxy rungs (they continue one another; the top rung starts anew)."""
    key = attrs.get(TRIAL_KEY_ATTR) or attrs.get("key")
    return f"{key}{PROXY_DIR}" if key and is_proxy_rung(attrs, spec) else key


def fractions(spec: FidelitySpec) -> list[float]:
    """The rungs' fractions of the SFT steps: min_fraction * eta^r below 1, then 1."""
    out, f = [], spec.min_fraction
    while f < 1 - 1e-9:
        out.append(round(f, 6))
        f *= spec.eta
    return out + [1.0]


def check(spec: FidelitySpec, source: str) -> None:
    lower = len(fractions(spec)) - 1
    where = f"{source}: strategy.fidelity"
    if spec.schedule == "asha" and (spec.promotion == "interval" or spec.decide_early):
        field = "promotion" if spec.promotion == "interval" else "decide_early"
        raise StudyError(f"{where}.{field}: needs schedule successive_halving (asha promotes before a rung is complete)")
    if spec.decide == "below_top" and spec.schedule == "asha":
        raise StudyError(f"{where}.decide: below_top needs schedule successive_halving")
    if spec.max_promoted is not None and spec.promotion != "interval":
        raise StudyError(f"{where}.max_promoted: caps promotion: interval (promotion count keeps ceil(n / eta))")
    if spec.eval_limits is not None:
        if len(spec.eval_limits) != lower:
            raise StudyError(f"{source}: strategy.fidelity.eval_limits: {len(spec.eval_limits)} values for "
                             f"{lower} rungs below the top (fractions {fractions(spec)[:-1]})")
        if any(n <= 0 for n in spec.eval_limits):
            raise StudyError(f"{source}: strategy.fidelity.eval_limits: every limit must be positive")


def stopped_marks(stored: StoredStudy) -> dict[str, int]:
    return dict(stored.system_attrs().get(STOPPED_ATTR) or {})


def is_early_stopped(t: FrozenTrial) -> bool:
    return bool((t.user_attrs.get(FIDELITY_ATTR) or {}).get("eval_early_stopped"))


@dataclass
class RoundRungs:
    items: list[Planned]  # every rung trial planned so far
    statuses: dict[str, Status]
    resolved: bool  # every rung decided and the top rung's trials resolved
    top: list[int]  # candidates (indices) planned at the deciding rung (the top, unless decide: below_top)
    stopped: dict[int, int] = field(default_factory=dict)  # candidate -> the rung it stopped at
    means: list[dict[int, float]] = field(default_factory=list)  # per rung: candidate -> seed mean
    owner: dict[str, int] = field(default_factory=dict)  # rung-trial key -> candidate
    rung_of: dict[str, int] = field(default_factory=dict)  # rung-trial key -> rung

    def stopped_trials(self) -> dict[int, int]:
        """The stopped candidates' complete trials at the rung they stopped at: number -> rung."""
        return {t.number: self.rung_of[k] for k, i in self.owner.items() if self.stopped.get(i) == self.rung_of[k]
                for t in self.statuses[k].trials if t.state == TrialState.COMPLETE}


class Schedule:
    def __init__(self, spec: FidelitySpec, maximize: bool) -> None:
        self.spec, self.sign = spec, 1.0 if maximize else -1.0
        self.fractions = fractions(spec)
        self.top = len(self.fractions) - 1
        # the rung a round is decided at: below the top, only the study's answer goes to the top
        self.decide_rung = self.top - 1 if spec.decide == "below_top" else self.top

    def eval_limit(self, rung: int) -> int | None:
        if rung >= self.top or self.spec.eval_limits is None:
            return None
        return self.spec.eval_limits[rung]

    @property
    def intervals(self) -> bool:
        """Whether the rungs below the top need bootstrap intervals (paired promotion, or rounds
        decided below the top with the paired comparisons)."""
        return self.spec.promotion == "interval" or self.spec.decide_early or self.decide_rung < self.top

    def _within(self, sts: dict[int, list[Status]], means: dict[int, float]) -> set[int] | None:
        """The rung's leader and every candidate with P(it beats the leader) >= alpha on the paired
        bootstrap replicates of the rung's trials; None when a candidate has no interval."""
        cands = {i: stats.candidate(str(i), [next(t for t in s.trials if t.state == TrialState.COMPLETE)
                                             for s in sts[i] if s.state == "complete"]) for i in means}
        if not cands or any(c["ci"] is None for c in cands.values()):
            return None
        leader = stats.compare(list(cands.values()), maximize=self.sign > 0, threshold=self.spec.alpha)
        keep = sorted((i for i, c in cands.items() if c is leader or c["tied"]), key=lambda i: (-self.sign * means[i], i))
        return set(keep[: self.spec.max_promoted] if self.spec.max_promoted else keep)

    def promote(self, sts: dict[int, list[Status]], means: dict[int, float], n: int) -> set[int]:
        """Who goes on from a decided rung of n candidates (without intervals: by count)."""
        within = self._within(sts, means) if self.intervals else None
        if self.spec.promotion == "interval" and within is not None:
            return within
        if self.spec.decide_early and within is not None and len(within) == 1:
            return within  # the leader beats every other beyond the interval: it alone goes on
        return self._best(means, math.ceil(n / self.spec.eta))

    def rung_item(self, p: Planned, rung: int) -> Planned:
        key = p.key if rung == self.top else f"{p.key}@rung{rung}"
        return Planned(key, p.params, {**p.user_attrs, "key": key, TRIAL_KEY_ATTR: p.key, RUNG_ATTR: rung,
                                       RUNGS_ATTR: len(self.fractions)})

    def trials_for(self, n: int) -> int:
        """Rung trials per seed of a round of n candidates (ASHA: when it promotes no more than SH)."""
        total, alive = 0, n
        for rung in range(self.decide_rung + 1):
            if rung < self.decide_rung and alive <= 1 and (self.spec.schedule != "asha" or n <= 1):
                continue  # straight to the deciding rung
            total += alive
            alive = math.ceil(alive / self.spec.eta)
        return total

    def _mean(self, statuses: list[Status]) -> float | None:
        """Seed mean of a candidate's complete rung trials; None when none is, or one stopped early."""
        done = [next(t for t in s.trials if t.state == TrialState.COMPLETE) for s in statuses if s.state == "complete"]
        if not done or any(is_early_stopped(t) for t in done):
            return None
        return sum(float(t.value) for t in done) / len(done)

    def _best(self, means: dict[int, float], k: int) -> set[int]:
        """The k best by seed mean, and any candidate level with the k-th (a tie is not weaker)."""
        ranked = sorted(means, key=lambda i: (-self.sign * means[i], i))
        if k <= 0 or not ranked:
            return set()
        cut = means[ranked[min(k, len(ranked)) - 1]]
        return set(ranked[:k]) | {i for i in ranked if means[i] == cut}

    def walk(self, cands: list[list[Planned]], status: Callable[[Planned], Status],
             known: set[str]) -> RoundRungs:
        """The rung trials of one round's candidates (each a list of planned trials, one per seed)."""
        out = RoundRungs([], {}, False, [])

        def plan(i: int, rung: int) -> list[Status]:
            sts = []
            for p in cands[i]:
                item = self.rung_item(p, rung)
                out.items.append(item)
                out.statuses[item.key] = status(item)
                out.owner[item.key], out.rung_of[item.key] = i, rung
                sts.append(out.statuses[item.key])
            return sts

        alive = list(range(len(cands)))
        if self.spec.schedule == "asha":
            return self._asha(alive, plan, known, cands, out)
        rung = 0
        while True:
            if len(alive) <= 1:
                rung = self.decide_rung
            sts = {i: plan(i, rung) for i in alive}
            if not all(s.resolved for ss in sts.values() for s in ss):
                return out
            if rung == self.decide_rung:
                out.resolved, out.top = True, alive
                return out
            means = {i: m for i in alive if (m := self._mean(sts[i])) is not None}
            out.means.append(means)
            keep = self.promote(sts, means, len(alive))
            out.stopped.update({i: rung for i in alive if i not in keep})
            alive = [i for i in alive if i in keep]
            if not alive:
                out.resolved = True
                return out
            rung += 1

    def _asha(self, alive: list[int], plan, known: set[str], cands: list[list[Planned]], out: RoundRungs) -> RoundRungs:
        members = alive
        complete = True
        for rung in range(self.top + 1):
            if len(alive) <= 1 and rung < self.top:
                continue  # a round of one candidate runs at full fidelity only
            sts = {i: plan(i, rung) for i in members}
            if rung == self.top:
                out.top = members
                out.resolved = complete and all(s.resolved for ss in sts.values() for s in ss)
                break
            done = [i for i in members if all(s.resolved for s in sts[i])]
            means = {i: m for i in done if (m := self._mean(sts[i])) is not None}
            out.means.append(means)
            rung_complete = complete and len(done) == len(members)  # no more can be promoted into it
            quota = math.ceil(len(members) / self.spec.eta) if rung_complete else len(done) // self.spec.eta
            sticky = {i for i in members if any(self.rung_item(p, rung + 1).key in known for p in cands[i])}
            promoted = sticky | self._best(means, quota)
            if rung_complete:
                out.stopped.update({i: rung for i in members if i not in promoted})
            complete = rung_complete
            members = [i for i in members if i in promoted]
        # the top rung first: a worker that frees up takes the most promising candidate on
        order = {it.key: -int(it.user_attrs[RUNG_ATTR]) for it in out.items}
        out.items.sort(key=lambda it: order[it.key])
        return out


def build_schedule(opts: Any, maximize: bool, source: str) -> Schedule | None:
    spec = getattr(opts, "fidelity", None)
    if spec is None:
        return None
    check(spec, source)
    if spec.decide == "below_top" and getattr(opts, "type", None) != "greedy":
        raise StudyError(f"{source}: strategy.fidelity.decide: below_top decides greedy rounds (a {opts.type} has none)")
    return Schedule(spec, maximize)


def request_for(schedule: Schedule, attrs: dict[str, Any], reference: dict[str, dict[str, float]] | None):
    """The trial-side rung request (trainers/stages/fidelity.py) of a rung trial's user attrs."""
    from trainers.stages.fidelity import EarlyStopRequest, FidelityRequest

    rung = int(attrs[RUNG_ATTR])
    es = schedule.spec.early_stop
    early = None
    if es is not None and reference and rung < schedule.top:
        early = EarlyStopRequest(alpha=es.alpha, min_items=es.min_items, every=es.every, reference=reference)
    return FidelityRequest(rung=rung, fraction=schedule.fractions[rung], eval_limit=schedule.eval_limit(rung),
                           final=rung == schedule.top, early_stop=early, intervals=schedule.intervals)


def leader_reference(trials: list[FrozenTrial], attrs: dict[str, Any], maximize: bool) -> dict | None:
    """Per-item scores of the round's best trial so far at this rung (early-stop reference):
    same round and rung, complete, not stopped early; the same seed preferred."""
    rung, rnd = attrs.get(RUNG_ATTR), attrs.get("round")
    pool = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get(RUNG_ATTR) == rung
            and t.user_attrs.get("round") == rnd and t.value is not None and not is_early_stopped(t)
            and t.system_attrs.get(ITEM_SCORES_ATTR)]
    same = [t for t in pool if t.user_attrs.get("seed") == attrs.get("seed")]
    pool = same or pool
    if not pool:
        return None
    best = (max if maximize else min)(pool, key=lambda t: (t.value, -t.number))
    return best.system_attrs[ITEM_SCORES_ATTR]
