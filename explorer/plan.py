"""Plan a study before it runs: every planned trial's per-stage cost (trainers.estimate.cost), the
study's GPU-hours with and without the stage-1 cache, and the memory check `run` does first.

Which greedy candidate wins a round is known only once it has run: the plan walks the rounds
as if the costliest candidate won each one (an upper bound on the study's GPU-hours), and the
memory check covers every expert set the greedy search could reach."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from explorer.study.spec import StudyError, StudySpec
from trainers.estimate.cost import Assumptions, StageEstimate, TrialEstimator, dataset_size
from trainers.spec import TrialSpec

MAX_ROUNDS = 1000  # a plan walk that does not end is a strategy bug, not a long study


def _fake_complete(value: float, attrs: dict[str, Any]):
    from optuna.trial import TrialState, create_trial

    return create_trial(state=TrialState.COMPLETE, value=value, user_attrs=dict(attrs))


def trial_hours(stages: dict[str, StageEstimate]) -> float | None:
    hours = [s.gpu_hours for s in stages.values()]
    return None if any(h is None for h in hours) else float(sum(hours))


def planned_trials(study: StudySpec, est: TrialEstimator) -> list[tuple[str, TrialSpec, dict[str, StageEstimate]]]:
    """(key, trial spec, stage estimates) of every trial the strategy plans, in order."""
    from explorer.study.trial_specs import build_trial_spec
    from explorer.strategies import build_strategy

    strategy = build_strategy(study)
    sign = 1.0 if study.objective.direction == "maximize" else -1.0
    done, out, seen = [], [], set()
    for _ in range(MAX_ROUNDS):
        plan = strategy.plan(done)
        new = [p for p in plan.items if p.key not in seen]
        for p in new:
            ts = build_trial_spec(study, p.params, p.user_attrs, number=len(out))
            stages = est.trial(ts)
            out.append((p.key, ts, stages))
            seen.add(p.key)
            done.append(_fake_complete(sign * (trial_hours(stages) or 0.0), p.user_attrs))
        if plan.finished or not new:
            return out
    raise StudyError(f"{study.source}: the plan of strategy {study.strategy.type!r} did not end")


def rung_costs(study: StudySpec, rows: list[tuple[str, TrialSpec, dict[str, StageEstimate]]]):
    """Multi-fidelity: a rung trial costs what it adds to its planned trial's directory, the SFT
    steps from the previous rung's fraction to its own (pre-alignment is paid at the first rung)."""
    from explorer.strategies.fidelity import PROXY_DIR, fractions

    spec = getattr(study.strategy, "fidelity", None)
    if spec is None:
        return rows
    fracs, done, out = fractions(spec), {}, []
    for key, ts, stages in rows:
        base, _, rung = key.partition("@rung")
        frac = fracs[int(rung)] if rung else 1.0
        if rung and spec.proxy is not None:  # proxy rungs continue one another, not the trial
            base += PROXY_DIR
        prev = done.get(base)
        done[base] = frac
        scaled = {}
        for name, s in stages.items():
            if name == "sft":
                share = frac - (prev or 0.0)
            else:
                share = 0.0 if prev is not None else 1.0
            hours = None if s.gpu_hours is None else s.gpu_hours * share
            scaled[name] = dataclasses.replace(s, gpu_hours=hours, stage1=s.stage1 if share else [])
        out.append((key, ts, scaled))
    return out


def reachable_trials(study: StudySpec) -> list[TrialSpec]:
    """Every trial spec a study can run: for greedy, each expert set from base to max_size (the
    winners are unknown); otherwise the planned trials."""
    from explorer.study.trial_specs import build_trial_spec
    from explorer.strategies import build_strategy

    strategy = build_strategy(study)
    if study.strategy.type != "greedy":
        return []  # planned_trials covers them
    base = list(study.strategy.base)
    specs = []
    for k in range(0, strategy.max_size - len(base) + 1):
        for extra in itertools.combinations(strategy.candidates, k):
            letters = base + list(extra)
            params = strategy.fixed_params(letters)
            specs.append(build_trial_spec(study, params, {"experts": "+".join(letters)}))
    return specs


def _sig(x: float | None) -> float | None:
    """Four significant digits: tiny CPU trials take microhours, paper-scale ones thousands of hours."""
    return None if x is None else float(f"{x:.4g}")


def _stage_doc(s: StageEstimate) -> dict[str, Any]:
    return {"trainable_params": s.trainable_params, "frozen_params": s.frozen_params,
            "flops_per_sample": s.flops_per_sample, "peak_memory_gb": round(s.peak_memory_gb, 3),
            "host_memory_gb_per_node": round(s.host_memory_gb, 3),
            "gpu_hours": _sig(s.gpu_hours), "samples": s.samples,
            "tokens_per_sample": s.tokens_per_sample, "memory_gb": {k: round(v, 3) for k, v in s.memory_gb.items()},
            **({"stage1": [{"expert": e["expert"], "key": hashlib.sha256(e["key"].encode()).hexdigest()[:16],
                            "gpu_hours": _sig(e["gpu_hours"])}
                           for e in s.stage1]} if s.stage1 else {})}


def plan_document(rows: list[tuple[str, TrialSpec, dict[str, StageEstimate]]], a: Assumptions,
                  notes: list[str]) -> dict[str, Any]:
    """The `plan --json` document: trials, per-stage figures, totals with and without the cache."""
    trials, without, with_cache, cached = [], 0.0, 0.0, set()
    known = True
    for key, ts, stages in rows:
        trials.append({"key": key, "experts": "+".join(e.preset for e in ts.experts),
                       "stages": {name: _stage_doc(s) for name, s in stages.items()}})
        for name, s in stages.items():
            if s.gpu_hours is None:
                known = False
                continue
            without += s.gpu_hours
            if name != "align_expert":
                with_cache += s.gpu_hours
                continue
            for e in s.stage1:  # a stage-1 result is trained once per study, then reused
                if e["key"] not in cached:
                    cached.add(e["key"])
                    with_cache += e["gpu_hours"]
    totals = {"with_cache": _sig(with_cache), "without_cache": _sig(without)} if known \
        else {"with_cache": None, "without_cache": None}
    return {"trials": trials, "total_gpu_hours": totals,
            "assumptions": {"gpus_per_trial": a.gpus, "mfu": a.mfu, "peak_tflops": a.peak_tflops,
                            "caption_tokens": a.caption_tokens, "sft_tokens": a.sft_tokens},
            "notes": notes}


def data_notes(ts: TrialSpec, a: Assumptions) -> list[str]:
    notes = []
    for which in ("pretrain", "sft"):
        n, source = dataset_size(ts, which, a)
        notes.append(f"{which} records: {n if n is not None else '?'} ({source})")
    return notes


@contextmanager
def _named(source: str) -> Iterator[None]:
    """An architecture that cannot be built offline is a bad input: one line naming the file."""
    from trainers.estimate.arch_profiles import ArchError

    try:
        yield
    except ArchError as err:
        raise StudyError(f"{source}: {err}") from None


def plan_study(study: StudySpec, a: Assumptions, cache_path: Path | None = None) -> dict[str, Any]:
    est = TrialEstimator(a, cache_path)
    with _named(study.source):
        rows = rung_costs(study, planned_trials(study, est))
    notes = data_notes(rows[0][1], a) if rows else []
    if study.strategy.type == "greedy":
        notes.append("greedy: rounds planned as if the costliest candidate won each (an upper bound)")
    doc = plan_document(rows, a, notes)
    if getattr(study.strategy, "fidelity", None) is not None:
        full = study.model_copy(update={"strategy": study.strategy.model_copy(update={"fidelity": None})})
        with _named(study.source):
            naive = plan_document(planned_trials(full, est), a, [])["total_gpu_hours"]
        tot = doc["total_gpu_hours"]
        tot["full_fidelity"] = naive
        if tot["with_cache"] is not None and naive["without_cache"]:
            tot["ratio_to_naive"] = _sig(tot["with_cache"] / naive["without_cache"])
            tot["ratio_fidelity_alone"] = _sig(tot["with_cache"] / naive["with_cache"])  # both with the cache
        notes.append("strategy.fidelity: a rung trial counts the SFT steps it adds (pre-alignment at its first "
                     "rung); evaluation is not counted; full_fidelity: the same study without rungs")
    est.save()
    return doc


def plan_trial(spec: TrialSpec, a: Assumptions, key: str, cache_path: Path | None = None) -> dict[str, Any]:
    est = TrialEstimator(a, cache_path)
    with _named(key):
        doc = plan_document([(key, spec, est.trial(spec))], a, data_notes(spec, a))
    est.save()
    return doc


def check_memory(study: StudySpec, gpu_memory_gb: float | None = None, cache_path: Path | None = None) -> None:
    """StudyError (one line) when a trial the study can run is estimated over the GPU memory the
    study declares (resources.gpu_memory_gb); nothing is checked when it declares none."""
    limit = gpu_memory_gb or study.resources.gpu_memory_gb
    if limit is None:
        return
    from trainers.estimate.arch_profiles import default_cache_path

    a = Assumptions(gpus=study.resources.nproc_per_trial)
    est = TrialEstimator(a, cache_path or default_cache_path())
    with _named(study.source):
        specs = reachable_trials(study) or [ts for _, ts, _ in planned_trials(study, est)]
        estimates = [(ts, est.trial(ts)) for ts in specs]
    for ts, stages in estimates:
        for stage, s in stages.items():
            if s.peak_memory_gb > limit:
                raise StudyError(
                    f"{study.source}: trial {'+'.join(e.preset for e in ts.experts)} stage {stage}: estimated "
                    f"peak {s.peak_memory_gb:.1f} GB per GPU exceeds resources.gpu_memory_gb={limit:g} "
                    f"({ts.train.strategy}, micro batch {ts.train.stages[stage].micro_batch_size}); see "
                    "`eagle-explore plan`")
    est.save()  # counts of a study that fits: its next plan or run counts none again
