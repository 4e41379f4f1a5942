"""Round-robin greedy expert selection (the Eagle paper's procedure).

Round 0 runs the base set; round 1's trials start beside it (their mixtures are the base plus each
candidate whatever round 0 scores). Each later round runs one trial per remaining candidate (current set +
candidate), ranks them by the mean objective over their seeds, keeps the best and goes on until
the maximum size (or, if configured, the first round without improvement). The answer is the
best set over all rounds. Every candidate is compared with its round's leader on paired bootstrap
replicates (explorer/study/stats.py); statistically tied leaders are marked, and with
`resolve_ties` they get extra seeds (racing) before the round is decided."""
from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from explorer.study.stats import candidate, compare, improves, public, tie_note, tied_labels
from explorer.strategies.base import Plan, Planned, Status, Strategy, group_by_key, status_of
from explorer.strategies.fidelity import build_schedule
from explorer.study.spec import GreedyStrategy, StudySpec


def experts_name(letters: list[str]) -> str:
    return "+".join(letters)


class Greedy(Strategy):
    opts: GreedyStrategy

    def __init__(self, spec: StudySpec) -> None:
        super().__init__(spec)
        o = self.opts
        if not o.base:
            raise self.fail("base", "greedy needs at least one base expert")
        self.check_letters("base", o.base)
        cands = o.candidates if o.candidates is not None else [x for x in self.space.letters if x not in o.base]
        self.check_letters("candidates", cands)
        both = sorted(set(cands) & set(o.base))
        if both:
            raise self.fail("candidates", f"{', '.join(both)} already in the base set")
        self.candidates = cands
        limit = len(o.base) + len(cands)
        self.max_size = o.max_size if o.max_size is not None else limit
        if self.max_size > limit:
            raise self.fail("max_size", f"{self.max_size} > {limit} experts available (base + candidates)")
        if self.max_size < len(o.base):
            raise self.fail("max_size", f"{self.max_size} < {len(o.base)} experts in the base set")
        self.schedule = build_schedule(o, spec.objective.direction == "maximize", spec.source)

    def sample_point(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.fixed_params(list(self.opts.base)), self._attrs(0, list(self.opts.base), None, self.seeds[0])

    def possible_params(self) -> list[dict[str, Any]]:
        # the base set and the base plus every candidate: each candidate is both absent and present
        rows = [self.fixed_params(list(self.opts.base))]
        if self.max_size > len(self.opts.base):
            rows.append(self.fixed_params(list(self.opts.base) + list(self.candidates)))
        return rows

    def total_planned(self) -> int:
        per_round = self.schedule.trials_for if self.schedule is not None else (lambda k: k)
        confirm = int(self.schedule is not None and self.schedule.decide_rung < self.schedule.top)
        n, size, rest = 1 + confirm, len(self.opts.base), len(self.candidates)
        while size < self.max_size and rest > 0:
            n += per_round(rest)
            size, rest = size + 1, rest - 1
        race = self.opts.resolve_ties
        rounds = len(range(len(self.opts.base), self.max_size + 1)) if self.candidates else 1
        return n * len(self.seeds) + (race.max_extra_trials * max(rounds - 1, 0) if race else 0)

    def _attrs(self, rnd: int, letters: list[str], cand: str | None, seed: int) -> dict[str, Any]:
        return {"round": rnd, "candidate": cand or "base", **self.seed_attrs(seed), "experts": experts_name(letters),
                "key": f"r{rnd}/{experts_name(letters)}/s{seed}"}

    def _planned(self, rnd: int, letters: list[str], cand: str | None, seeds: list[int]) -> list[Planned]:
        return [Planned(a["key"], self.fixed_params(letters), a)
                for a in (self._attrs(rnd, letters, cand, seed) for seed in seeds)]

    def _round_items(self, rnd: int, current: list[str], remaining: list[str]) -> list[tuple[list[str], str | None, list[Planned]]]:
        sets = [(current, None)] if rnd == 0 else [(current + [c], c) for c in remaining]
        return [(letters, cand, self._planned(rnd, letters, cand, self.seeds)) for letters, cand in sets]

    def _racing(self, rnd: int, cands: list[dict[str, Any]], round_sets) -> list[tuple[int, list[Planned]]]:
        """Extra seeds for the statistically tied leaders (strategy.resolve_ties), as (index into
        round_sets, planned trials); none when the leader is clear or the budget cannot race two."""
        race = self.opts.resolve_ties
        tied = tied_labels(cands)
        if race is None or not tied:
            return []
        tied = tied[:race.max_extra_trials // race.extra_seeds]
        if len(tied) < 2:
            return []
        extra = [max(self.seeds) + 1 + i for i in range(race.extra_seeds)]
        index = {experts_name(letters): i for i, (letters, _, _) in enumerate(round_sets)}
        return [(index[label], self._planned(rnd, round_sets[index[label]][0], round_sets[index[label]][1], extra))
                for label in tied]

    def _decided(self, ps: list[Planned]) -> list[Planned]:
        """The trials of `ps` at the rung a round is decided at (the planned ones at the top)."""
        s = self.schedule
        return ps if s is None or s.decide_rung == s.top else [s.rung_item(p, s.decide_rung) for p in ps]

    def _confirm(self, plan: Plan, best: list[Planned] | None, status) -> Plan:
        """decide: below_top: the answer, trained once at the top rung, ends the study."""
        s = self.schedule
        if s is None or s.decide_rung == s.top or not best:
            return plan
        items = [s.rung_item(p, s.top) for p in best]
        plan.statuses.update({p.key: status(p) for p in items})
        plan.items = plan.items + items
        return plan

    def _walk(self, trials: list[FrozenTrial]) -> tuple[Plan, list[dict[str, Any]]]:
        """Replay the rounds over the stored trials; stop at the first unresolved round."""
        groups = group_by_key(trials)
        stopped: dict[int, int] = {}
        current, remaining = list(self.opts.base), list(self.candidates)
        best: dict[str, Any] | None = None  # the leader of the last round that improved
        best_planned: list[Planned] | None = None  # its planned trials (decide: below_top confirms them)
        path: list[dict[str, Any]] = []
        rnd = 0
        maximize = self.spec.objective.direction == "maximize"
        status = lambda p: status_of(groups.get(p.key, []), self.spec.retries, self.spec.max_interruptions)  # noqa: E731
        while True:
            round_sets = self._round_items(rnd, current, remaining)
            if rnd == 0:
                last_round = len(current) >= self.max_size or not remaining
            else:
                last_round = len(current) + 1 >= self.max_size or len(remaining) <= 1
            entry: dict[str, Any] = {"round": rnd}
            items, statuses, resolved, top, rungs = self._round_trials(round_sets, status, groups)
            if rungs is not None:
                stopped.update(rungs.stopped_trials())
                entry["rungs"] = [{experts_name(round_sets[i][0]): m for i, m in means.items()}
                                  for means in rungs.means]  # per rung: candidate -> seed mean
            if not resolved:
                if rnd == 0 and not last_round:  # round 1's mixtures do not depend on round 0's outcome
                    ahead, ahead_statuses, _, _, _ = self._round_trials(self._round_items(1, current, remaining),
                                                                        status, groups)
                    items, statuses = items + ahead, {**statuses, **ahead_statuses}
                return Plan(items, statuses, rnd, done=last_round, stopped=stopped), path
            cands = [self._candidate_stats(rnd, letters, cand, [statuses[p.key] for p in self._decided(ps)]) if i in top
                     else self._stopped_stats(rnd, letters, cand, rungs.stopped.get(i))
                     for i, (letters, cand, ps) in enumerate(round_sets)]
            compare(cands, maximize, self.opts.tie_threshold)
            entry["candidates"] = cands
            racing = self._racing(rnd, cands, round_sets)
            if racing:  # decide on every seed of the racers once their extra trials are resolved
                racing = [(i, self._decided(ps)) for i, ps in racing]
                extra = [p for _, ps in racing for p in ps]
                statuses.update({p.key: status(p) for p in extra})
                if not all(statuses[p.key].resolved for p in extra):
                    return Plan(items + extra, statuses, rnd, done=False, stopped=stopped), path
                entry["racing"] = {"before": tied_labels(cands), "seeds": [p.user_attrs["seed"] for p in racing[0][1]]}
                for i, ps in racing:
                    letters, cand, base = round_sets[i]
                    cands[i] = self._candidate_stats(rnd, letters, cand, [statuses[p.key] for p in self._decided(base) + ps])
                compare(cands, maximize, self.opts.tie_threshold)
            path.append(entry)
            leader = next((c for c in cands if c.get("leader")), None)
            if leader is None:
                entry["best_experts"] = None
                return Plan(items, statuses, rnd, True, f"round {rnd}: every candidate failed or was pruned",
                            stopped), path
            entry.update(best_experts=leader["experts"], best_value=leader["mean"], best_std=leader["std"],
                         best_ci=leader["ci"], tied=tied_labels(cands), tie_note=tie_note(cands))
            complete = [c for c in cands if c["n"] and not c["partial"]]
            if leader["partial"] and complete:  # said, never silent: it won on fewer seeds than planned
                entry["partial_note"] = (f"{leader['experts']} leads on {leader['n']} of {leader['planned']} seeds "
                                         f"(its other seeds failed)")
            improved = improves(leader, best, maximize, self.opts.improvement)
            entry["improved"] = improved
            if improved:
                best = leader
                best_planned = next(ps for (_, _, ps), c in zip(round_sets, cands) if c is leader)
            new_current = leader["letters"]
            if last_round:
                return self._confirm(Plan(items, statuses, rnd, True, "maximum size reached", stopped),
                                     best_planned, status), path
            if not improved and self.opts.stop_on_no_improvement:
                return self._confirm(Plan(items, statuses, rnd, True, f"round {rnd}: no improvement", stopped),
                                     best_planned, status), path
            if rnd > 0:
                remaining = [c for c in remaining if c != leader["candidate"]]
            current = new_current
            rnd += 1

    def _round_trials(self, round_sets, status, groups):
        """(items, statuses, resolved, indices at the top rung, the rung walk or None) of one round."""
        if self.schedule is None:
            items = [p for _, _, ps in round_sets for p in ps]
            statuses = {p.key: status(p) for p in items}
            return items, statuses, all(s.resolved for s in statuses.values()), range(len(round_sets)), None
        # multi-fidelity: rung trials (explorer/strategies/fidelity.py); the decision is the top rung's
        rungs = self.schedule.walk([ps for _, _, ps in round_sets], status, set(groups))
        return rungs.items, rungs.statuses, rungs.resolved, rungs.top, rungs

    @staticmethod
    def _candidate_stats(rnd: int, letters: list[str], cand: str | None, statuses: list[Status]) -> dict[str, Any]:
        done = [next(t for t in s.trials if t.state == TrialState.COMPLETE) for s in statuses if s.state == "complete"]
        out = candidate(f"r{rnd}/{experts_name(letters)}", done, planned=len(statuses))
        out.update(experts=experts_name(letters), letters=list(letters), candidate=cand or "base",
                   states=[s.state for s in statuses])
        return out

    @staticmethod
    def _stopped_stats(rnd: int, letters: list[str], cand: str | None, rung: int | None) -> dict[str, Any]:
        """A candidate that stopped below the top rung (or failed there): no full-fidelity value."""
        out = Greedy._candidate_stats(rnd, letters, cand, [])
        out.update(stopped_rung=rung, states=[f"stopped at rung {rung}" if rung is not None else "failed"])
        return out

    def plan(self, trials: list[FrozenTrial]) -> Plan:
        return self._walk(trials)[0]

    def summary(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        plan, path = self._walk(trials)
        best_value, best_experts = None, None
        for entry in path:  # the answer: the last round that improved (strategy.improvement)
            if entry.get("best_experts") and entry.get("improved"):
                best_value, best_experts = entry["best_value"], entry["best_experts"]
        confirmed = self._confirmed(plan)
        if confirmed is not None:  # decide: below_top: the answer's value is its full-fidelity trial's
            best_value = confirmed
        best_params = None
        if best_experts is not None:
            best_params = self.fixed_params(best_experts.split("+"))
        path = [{**e, "candidates": [public(c) for c in e["candidates"]]} for e in path]
        return {"best_value": best_value, "best_experts": best_experts, "best_params": best_params,
                "path": path, "round": plan.round, "stop_reason": plan.stop_reason,
                **({"confirmed_value": confirmed} if confirmed is not None else {})}

    def _confirmed(self, plan: Plan) -> float | None:
        """The seed mean of the answer's top-rung trials (decide: below_top), once complete."""
        s = self.schedule
        if s is None or s.decide_rung == s.top:
            return None
        values = [plan.statuses[p.key].value for p in plan.items
                  if p.user_attrs.get("rung") == s.top and plan.statuses[p.key].state == "complete"]
        return sum(values) / len(values) if values else None
