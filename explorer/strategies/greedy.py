"""Round-robin greedy expert selection (the Eagle paper's procedure).

Round 0 runs the base set. Each later round runs one trial per remaining candidate (current set +
candidate), ranks them by the mean objective over their seeds, keeps the best and goes on until
the maximum size (or, if configured, the first round without improvement). The answer is the
best set over all rounds."""
from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from explorer.strategies.base import Plan, Planned, Status, Strategy, group_by_key, mean_std, status_of
from explorer.study import GreedyStrategy, StudySpec


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

    def sample_point(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.fixed_params(list(self.opts.base)), self._attrs(0, list(self.opts.base), None, self.seeds[0])

    def possible_params(self) -> list[dict[str, Any]]:
        # the base set and the base plus every candidate: each candidate is both absent and present
        rows = [self.fixed_params(list(self.opts.base))]
        if self.max_size > len(self.opts.base):
            rows.append(self.fixed_params(list(self.opts.base) + list(self.candidates)))
        return rows

    def total_planned(self) -> int:
        n, size, rest = 1, len(self.opts.base), len(self.candidates)
        while size < self.max_size and rest > 0:
            n += rest
            size, rest = size + 1, rest - 1
        return n * len(self.seeds)

    def _attrs(self, rnd: int, letters: list[str], cand: str | None, seed: int) -> dict[str, Any]:
        return {"round": rnd, "candidate": cand or "base", "seed": seed, "experts": experts_name(letters),
                "key": f"r{rnd}/{experts_name(letters)}/s{seed}"}

    def _round_items(self, rnd: int, current: list[str], remaining: list[str]) -> list[tuple[list[str], str | None, list[Planned]]]:
        sets = [(current, None)] if rnd == 0 else [(current + [c], c) for c in remaining]
        out = []
        for letters, cand in sets:
            items = []
            for seed in self.seeds:
                attrs = self._attrs(rnd, letters, cand, seed)
                items.append(Planned(attrs["key"], self.fixed_params(letters), attrs))
            out.append((letters, cand, items))
        return out

    def _walk(self, trials: list[FrozenTrial]) -> tuple[Plan, list[dict[str, Any]]]:
        """Replay the rounds over the stored trials; stop at the first unresolved round."""
        groups = group_by_key(trials)
        current, remaining = list(self.opts.base), list(self.candidates)
        best: tuple[float, list[str]] | None = None
        path: list[dict[str, Any]] = []
        rnd = 0
        while True:
            round_sets = self._round_items(rnd, current, remaining)
            items = [p for _, _, ps in round_sets for p in ps]
            statuses = {p.key: status_of(groups.get(p.key, []), self.spec.retries, self.spec.max_interruptions) for p in items}
            if rnd == 0:
                last_round = len(current) >= self.max_size or not remaining
            else:
                last_round = len(current) + 1 >= self.max_size or len(remaining) <= 1
            if not all(s.resolved for s in statuses.values()):
                return Plan(items, statuses, rnd, done=last_round), path
            cands = [self._candidate_stats(letters, cand, [statuses[p.key] for p in ps])
                     for letters, cand, ps in round_sets]
            scored = [c for c in cands if c["n"] > 0]
            entry: dict[str, Any] = {"round": rnd, "candidates": cands}
            path.append(entry)
            if not scored:
                entry["best_experts"] = None
                return Plan(items, statuses, rnd, True, f"round {rnd}: every candidate failed or was pruned"), path
            top = scored[0]
            for c in scored[1:]:  # ties keep the earlier candidate: deterministic
                if self.better(c["mean"], top["mean"]):
                    top = c
            entry.update(best_experts=top["experts"], best_value=top["mean"], best_std=top["std"])
            improved = best is None or self.better(top["mean"], best[0])
            entry["improved"] = improved
            if improved:
                best = (top["mean"], top["letters"])
            new_current = top["letters"]
            if last_round:
                return Plan(items, statuses, rnd, True, "maximum size reached"), path
            if not improved and self.opts.stop_on_no_improvement:
                return Plan(items, statuses, rnd, True, f"round {rnd}: no improvement"), path
            if rnd > 0:
                remaining = [c for c in remaining if c != top["candidate"]]
            current = new_current
            rnd += 1

    @staticmethod
    def _candidate_stats(letters: list[str], cand: str | None, statuses: list[Status]) -> dict[str, Any]:
        values = [s.value for s in statuses if s.state == "complete" and s.value is not None]
        mean, std = mean_std(values)
        states = [s.state for s in statuses]
        return {"experts": experts_name(letters), "letters": list(letters), "candidate": cand or "base",
                "values": values, "n": len(values), "mean": mean, "std": std, "states": states}

    def plan(self, trials: list[FrozenTrial]) -> Plan:
        return self._walk(trials)[0]

    def summary(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        plan, path = self._walk(trials)
        best_value, best_experts = None, None
        for entry in path:
            if entry.get("best_experts") and (best_value is None or self.better(entry["best_value"], best_value)):
                best_value, best_experts = entry["best_value"], entry["best_experts"]
        best_params = None
        if best_experts is not None:
            best_params = self.fixed_params(best_experts.split("+"))
        return {"best_value": best_value, "best_experts": best_experts, "best_params": best_params,
                "path": path, "round": plan.round, "stop_reason": plan.stop_reason}
