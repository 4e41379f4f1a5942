"""The controller: runs or resumes a study to completion from the database alone.

Every loop: under the planner lock, fail trials whose heartbeat stopped, replay the strategy over
the stored trials and enqueue the planned trials that have no live attempt; then claim WAITING
trials (atomically: WAITING -> RUNNING), run them on the executor and record each outcome.
Any number of controllers (`run`) and workers (`worker`) can share one study."""
from __future__ import annotations

import concurrent.futures as cf
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from explorer.study.attrs import LABEL_ATTR, name_metrics, trial_label
from explorer.strategies import fidelity as F
from explorer.backends.local import LocalRunner
from explorer.backends.registry import build_executor
from explorer.backends.base import Executor, Runner, TrialJob, TrialOutcome, trial_dir_name
from explorer.study.trial_specs import build_trial_spec, write_trial_spec
from explorer.study.storage import (
    BASE_CHANGES_ATTR,
    OWNER_ATTR,
    fail_orphaned_trials,
    fail_stale_trials,
    make_storage,
    open_study,
    owner_token,
    planner_lock,
)
from explorer.strategies import Plan, Strategy, build_strategy
from explorer.strategies.base import FIXED_PREFIX, group_by_key, is_error_fail, trial_params
from explorer.study.spec import StudySpec
from explorer.study.trial_outcome import record_outcome
from explorer.study.handle import StoredStudy
from explorer.study.expectation import FINISHED_ATTR
from explorer.tracking.hooks import Tracker

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class StudyOutcome:
    study_name: str
    finished: bool
    stopped_reason: str | None
    best_value: float | None
    best_experts: str | None
    best_params: dict[str, Any] | None
    path: list[dict[str, Any]]  # per round: candidates (experts, values, mean, std, states), best
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int  # FAIL with an error (retried or final)
    n_running: int
    elapsed_s: float

    @property
    def greedy_path(self) -> list[str]:
        return [r["best_experts"] for r in self.path if r.get("best_experts")]


@dataclass
class _Active:
    trial: optuna.Trial
    trial_id: int
    job: TrialJob
    stop: threading.Event = field(default_factory=threading.Event)


class Controller:
    def __init__(self, spec: StudySpec, storage_url: str, workdir: str | Path, *, tracker: Tracker | None = None,
                 runner: Runner | None = None, backend: str = "local",
                 progress: Callable[[dict[str, Any]], None] | None = None, create: bool = True) -> None:
        self.spec, self.url, self.workdir = spec, storage_url, Path(workdir).resolve()
        self.tracker, self.progress = tracker, progress
        self.strategy: Strategy = build_strategy(spec)
        self.constants = self.strategy.constant_params()  # user attrs, not Optuna params
        self.storage = make_storage(spec, storage_url)
        sampler = self.strategy.sampler()
        self.study = open_study(spec, storage_url, create=create, storage=self.storage, sampler=sampler)
        self.study_id = self.storage.get_study_id_from_name(spec.name)
        self.executor: Executor = build_executor(backend, runner or LocalRunner(), spec, self.workdir)
        self.active: dict[cf.Future, _Active] = {}
        self.cache_dir = self.workdir / "cache"
        self.trials_dir = self.workdir / "trials" / spec.name
        self.t0 = time.monotonic()
        self.durations: list[float] = []
        self._last_beat = 0.0

    # -- planning -------------------------------------------------------------------------
    def _plan_and_enqueue(self, enqueue: bool) -> tuple[Plan, list[FrozenTrial], int]:
        """Returns the plan, the trials it was made from, and how many items the budget blocked."""
        with planner_lock(self.url, self.spec.name):
            self._beat_own()
            fail_orphaned_trials(self.storage, self.study_id)
            fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            plan = self.strategy.plan(trials)
            self._mark_stopped(plan)
            if not enqueue:
                return plan, trials, 0
            groups = group_by_key(trials)
            used = len(groups)
            cap = self.spec.budget.max_trials
            blocked = 0
            for item in plan.items:
                status = plan.statuses[item.key]
                if status.state not in ("new", "retry"):
                    continue
                if status.state == "new":
                    if cap is not None and used >= cap:
                        blocked += 1
                        continue
                    used += 1
                previous = groups.get(item.key, [])
                params = {**item.params, **self._sampled_params_of(previous)}
                attrs = {**item.user_attrs, "attempt": len(previous),
                         **{FIXED_PREFIX + k: v for k, v in params.items() if k in self.constants}}
                params = {k: v for k, v in params.items() if k not in self.constants}
                self.study.enqueue_trial(params, user_attrs=attrs)
                logger.info("enqueued %s (attempt %d)", item.key, len(previous))
            return plan, trials, blocked

    def _mark_stopped(self, plan: Plan) -> None:
        """Multi-fidelity: which trials a candidate stopped at, and at which rung (status, leaderboard)."""
        if not plan.stopped:
            return
        marks = F.stopped_marks(StoredStudy(self.storage, self.study_id))
        new = {str(n): rung for n, rung in plan.stopped.items() if str(n) not in marks}
        if new:  # a finished trial's attrs are read-only: the marks are the study's
            self.storage.set_study_system_attr(self.study_id, F.STOPPED_ATTR, {**marks, **new})

    def _sampled_params_of(self, previous: list[FrozenTrial]) -> dict[str, Any]:
        """A retry re-runs the sampled hyper-parameters of the first attempt that recorded them
        all; an attempt killed while its params were being written has only some of them."""
        names = self.strategy.sampled_params()
        for t in previous:
            if names and all(n in t.params for n in names):
                return {n: t.params[n] for n in names}
        return {}

    def _beat_own(self) -> None:
        """Our live trials are never stale to us, however late their heartbeat threads run."""
        now = time.monotonic()
        if now - self._last_beat < min(1.0, self.spec.heartbeat_interval_s / 2):
            return
        self._last_beat = now
        for active in list(self.active.values()):
            self.storage.record_heartbeat(active.trial_id)

    # -- claiming and running -------------------------------------------------------------
    def _claim(self, trial_id: int) -> bool:
        # SQLite has no row locks, so WAITING -> RUNNING is only atomic under the planner lock
        with planner_lock(self.url, self.spec.name):
            if self.storage.get_trial(trial_id).state != TrialState.WAITING:
                return False  # another controller claimed it (or it was failed) since we looked
            # owner and heartbeat before RUNNING, so a claimed trial is never without them: if this
            # process dies, a controller on this machine re-runs the trial at once
            self.storage.set_trial_system_attr(trial_id, OWNER_ATTR, owner_token())
            self.storage.record_heartbeat(trial_id)
            try:
                return self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
            except optuna.exceptions.UpdateFinishedTrialError:
                return False

    def _suggest(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        """Record the fixed params, and let the sampler pick the strategy's sampled ones."""
        sampled = set(self.strategy.sampled_params())
        for name, dist in self.strategy.distributions().items():
            if name not in fixed and name not in sampled:
                continue
            if isinstance(dist, CategoricalDistribution):
                trial.suggest_categorical(name, list(dist.choices))
            elif isinstance(dist, FloatDistribution):
                trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
            elif isinstance(dist, IntDistribution):
                trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)

    def _heartbeat(self, trial_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.spec.heartbeat_interval_s):
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as err:  # a missed beat is retried; the grace period absorbs it
                logger.warning("heartbeat of trial %d failed: %s", trial_id, err)

    def _start(self, trial_id: int) -> None:
        frozen = self.storage.get_trial(trial_id)
        trial = optuna.Trial(self.study, trial_id)
        active = _Active(trial, trial_id, None)  # type: ignore[arg-type]
        threading.Thread(target=self._heartbeat, args=(trial_id, active.stop), daemon=True).start()
        # the rungs of a planned trial share its directory (proxy rungs their own): each continues the one before
        dir_key = F.dir_key(frozen.user_attrs, getattr(self.spec.strategy, "fidelity", None)) or str(trial.number)
        trial_dir = self.trials_dir / trial_dir_name(dir_key)
        try:
            self._suggest(trial, frozen.system_attrs.get("fixed_params", {}))
            trial.set_user_attr("trial_dir", str(trial_dir))
            attrs = dict(frozen.user_attrs)
            params = trial_params(self.storage.get_trial(trial_id))
            trial.set_user_attr(LABEL_ATTR, trial_label(attrs.get("experts", ""), attrs, trial.number))
            ts = build_trial_spec(self.spec, params, attrs, number=trial.number, cache_dir=self.cache_dir)
            spec_path = write_trial_spec(ts, trial_dir)
            self._write_rung_request(attrs, trial_dir)
        except Exception as err:  # a spec that cannot be built fails this trial, not the study
            self._record(active, TrialOutcome("fail", error=f"{type(err).__name__}: {err}"), trial_dir)
            return
        if self.tracker is not None:
            self.tracker.on_trial_start(self.study, trial.number, trial_dir)

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        active.job = TrialJob(number=trial.number, trial_dir=trial_dir, spec_path=spec_path, params=params,
                              user_attrs=attrs, nproc=self.spec.resources.nproc_per_trial,
                              metric=self.spec.objective.metric, report=report, restart=self._base_changed())
        logger.info("trial %d started: %s", trial.number, attrs.get("key"))
        self.active[self.executor.submit(active.job)] = active

    def _write_rung_request(self, attrs: dict[str, Any], trial_dir: Path) -> None:
        """The rung a launch stops at (trainers/stages/fidelity.py); none: full fidelity."""
        from trainers.stages.fidelity import write_request

        schedule = self.strategy.schedule
        if schedule is None or F.RUNG_ATTR not in attrs:
            write_request(trial_dir, None)
            return
        maximize = self.spec.objective.direction == "maximize"
        reference = F.leader_reference(self.study.get_trials(deepcopy=False), attrs, maximize)
        write_request(trial_dir, F.request_for(schedule, attrs, reference))

    def _claim_and_start(self, plan: Plan) -> None:
        free = self.executor.max_concurrent - len(self.active)
        if free <= 0:
            return
        waiting = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,))
        by_key = {}
        for t in waiting:
            by_key.setdefault(t.user_attrs.get("key"), t)
        for item in plan.items:
            if free <= 0:
                break
            t = by_key.get(item.key)
            if t is None:
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            if self._claim(trial_id):
                self._start(trial_id)
                free -= 1

    def _record(self, active: _Active, outcome: TrialOutcome, trial_dir: Path | None = None) -> None:
        trial_dir = trial_dir or active.job.trial_dir
        try:
            if record_outcome(self.study, self.storage, active.trial, active.trial_id, outcome,
                              trial_dir=trial_dir, grace_period_s=self.spec.grace_period_s):
                self.durations.append(outcome.duration_s)
        finally:
            active.stop.set()
        if self.tracker is not None:
            self.tracker.on_trial_end(self.study, self.storage.get_trial(active.trial_id), trial_dir)

    def _base_changed(self) -> bool:
        """After an accepted base-trial change, a trial directory of the old spec starts over."""
        return bool(self.storage.get_study_system_attrs(self.study_id).get(BASE_CHANGES_ATTR))

    def _interrupt_all(self) -> None:
        """Our running trials become FAIL without an error: re-run on resume, not a retry."""
        self.executor.shutdown(cancel=True)
        for active in self.active.values():
            active.stop.set()
            try:
                active.trial.set_user_attr("interrupted", True)
                self.study.tell(active.trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception as err:  # the heartbeat timeout covers what this cannot record
                logger.warning("could not mark trial %d interrupted: %s", active.trial.number, err)
        self.active.clear()

    # -- reporting ------------------------------------------------------------------------
    def _report_progress(self, plan: Plan, trials: list[FrozenTrial]) -> None:
        if self.progress is None:
            return
        summary = self.strategy.summary(trials)
        done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        elapsed = time.monotonic() - self.t0
        eta = None
        if self.durations:
            remaining = max(self.strategy.total_planned() - done, 0)
            eta = statistics.fmean(self.durations) * remaining / self.executor.max_concurrent
        self.progress({"round": plan.round, "done": done,
                       "running": sum(1 for t in trials if t.state == TrialState.RUNNING),
                       "failed": sum(1 for t in trials if is_error_fail(t)),
                       "best_value": summary["best_value"], "best_experts": summary["best_experts"],
                       "tie": _last_tie(summary["path"]),
                       "elapsed_s": elapsed, "eta_s": eta})

    def outcome(self, finished: bool, reason: str | None) -> StudyOutcome:
        if finished:  # what the expectation check waits for (explorer/study/expectation.py)
            StoredStudy.of(self.study).set_system_attr(FINISHED_ATTR, True)
        trials = self.study.get_trials(deepcopy=False)
        s = self.strategy.summary(trials)
        count = lambda st: sum(1 for t in trials if t.state == st)  # noqa: E731
        return StudyOutcome(self.spec.name, finished, reason or s.get("stop_reason"), s["best_value"],
                            s["best_experts"], s["best_params"], s["path"], len(trials), count(TrialState.COMPLETE),
                            count(TrialState.PRUNED), sum(1 for t in trials if is_error_fail(t)),
                            count(TrialState.RUNNING), time.monotonic() - self.t0)

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> StudyOutcome:
        name_metrics(self.study, self.spec.objective.metric)
        if self.tracker is not None:
            self.tracker.on_study_start(self.study)
        stopping: str | None = None
        try:
            while True:
                timeout = self.spec.budget.timeout_s
                if stopping is None and timeout is not None and time.monotonic() - self.t0 > timeout:
                    stopping = f"timeout after {timeout:g} s"
                plan, trials, blocked = self._plan_and_enqueue(enqueue=stopping is None)
                if plan.finished and not self.active:
                    self._report_progress(plan, trials)
                    return self.outcome(True, None)
                if stopping is None:
                    self._claim_and_start(plan)
                self._report_progress(plan, self.study.get_trials(deepcopy=False))
                if not self.active:
                    live = [s for s in plan.statuses.values() if s.state in ("running", "waiting", "new", "retry")]
                    if stopping is not None:
                        return self.outcome(False, stopping)
                    if blocked and len(live) == blocked:
                        return self.outcome(False, f"budget: max_trials={self.spec.budget.max_trials} reached")
                    time.sleep(self.spec.poll_interval_s)  # others are running our round
                    continue
                done, _ = cf.wait(list(self.active), timeout=self.spec.poll_interval_s,
                                  return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    outcome = fut.result()  # before the pop: if it raises, the trial is still ours to mark
                    self._record(self.active.pop(fut), outcome)
        except BaseException:
            self._interrupt_all()
            raise
        finally:
            self.executor.shutdown(cancel=False)


def _last_tie(path: list[dict[str, Any]]) -> str | None:
    """The latest decided round's tie, in words (None when its leader is clear)."""
    last = path[-1] if path else {}
    return f"round {last['round']}: {last['tie_note']}" if last.get("tie_note") else None


def run_study(spec: StudySpec, storage_url: str, workdir: str | Path, *, tracker: Tracker | None = None,
              runner: Runner | None = None, backend: str = "local",
              progress: Callable[[dict[str, Any]], None] | None = None) -> StudyOutcome:
    """Run the study to completion, or resume it (the database is the only state)."""
    return Controller(spec, storage_url, workdir, tracker=tracker, runner=runner, backend=backend,
                      progress=progress).run()


def run_worker(spec: StudySpec, storage_url: str, workdir: str | Path, *, tracker: Tracker | None = None,
               runner: Runner | None = None, backend: str = "local",
               progress: Callable[[dict[str, Any]], None] | None = None) -> StudyOutcome:
    """Join an existing study (created by `run`) and work on it until it is complete."""
    return Controller(spec, storage_url, workdir, tracker=tracker, runner=runner, backend=backend,
                      progress=progress, create=False).run()
