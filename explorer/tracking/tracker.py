"""MLflow tracking of a study: one experiment and one parent run per study, one child run per trial.

Every run is found again by its tags (study name, trial number), so a resumed study, or a second
controller on the same study, keeps logging to the same runs instead of creating duplicates. The
experiment opens on its runs table; a child run is named like the trial's label ("A+B+F · r1 ·
#3") and holds what explorer.tracking.run_fields says; the parent run is the study's report (params,
tables, plots: explorer.report.artifacts), refreshed after every trial.
"""
from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from explorer.tracking import batch as mb
from explorer.tracking import run_fields as rf
from explorer.study.attrs import (RUN_URL_ATTR, SCORE_PREFIX, STUDY_EXPERIMENT_ATTR, STUDY_RUN_ATTR, TRIAL_RUN_ATTR,
                                  expert_letters, trial_label, trial_scores)
from explorer.tracking.live_metrics import LIVE_ROWS_TAG, LiveMetrics
from explorer.tracking.store import (
    KIND,
    KIND_TAG,
    UI_PORT,
    VIEW_KEY,
    VIEW_TAG_PREFIX,
    default_artifact_root,
    default_tracking_uri,
    reroot,
    run_url,
    view_state,
)
from explorer.redact import mask
from trainers import trial_dir as TD
from explorer.report.rungs import rung_tag
from explorer.tracking.trial_run import run_record
from explorer.study.handle import StoredStudy

logger = logging.getLogger(__name__)

__all__ = ["MlflowTracker", "TrackingError", "default_artifact_root", "default_tracking_uri", "expert_letters"]

# Study user attrs (set here) and trial user attrs (set here, read by report/status).

TAG_STUDY = "eagle.study"
TAG_ROLE = "eagle.role"
TAG_TRIAL = "eagle.trial_number"
TAG_LOGGED = "eagle.logged"  # set once a trial's results are in: a resumed study never logs twice
PARENT_TAG = "mlflow.parentRunId"

# Optuna TrialState name -> MLflow RunStatus name.
RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}

class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, bad URI, deleted experiment)."""


def _check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail now, before any trial runs, if an http(s) tracking server does not answer."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (user-given URI)
            resp.read(64)
    except urllib.error.HTTPError:
        return  # the server answered; /health may just not exist behind a proxy
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"MLflow tracking server {mask(uri)} is unreachable: {reason}") from None


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class MlflowTracker:
    """Logs a study to MLflow. The controller calls on_study_start once, then per trial
    on_trial_start (returns the child run id, also stored as the trial's `mlflow_run_id` user attr)
    and on_trial_end, and on_study_end when the study is finished. With the study spec and work
    directory it also keeps the study's report (explorer.report.artifacts) in the parent run."""

    def __init__(self, tracking_uri: str, experiment_name: str | None = None, artifact_root: str | None = None,
                 *, spec: Any = None, workdir: str | Path | None = None, report_interval_s: float = 30.0,
                 live_interval_s: float = 10.0):
        if not tracking_uri or "://" not in tracking_uri:
            raise TrackingError(f"tracking URI {mask(tracking_uri)!r} is not a URI (sqlite:///PATH, http://HOST:PORT, file:///DIR)")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_root = artifact_root
        self.spec = spec
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        # redrawing the report takes seconds: after a trial at most this often, always at the end
        self.report_interval_s = report_interval_s
        self._reported_at = -math.inf
        self._client = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.live = LiveMetrics(lambda: self.client, live_interval_s)  # training curves while trials run

    # -- connection -------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            if self.tracking_uri.startswith(("http://", "https://")):
                _check_reachable(self.tracking_uri)
            from mlflow.tracking import MlflowClient

            try:
                self._client = MlflowClient(tracking_uri=self.tracking_uri)
                self._client.search_experiments(max_results=1)  # opens (and migrates) the store now
            except Exception as err:  # noqa: BLE001 -- any store failure is one clear line
                self._client = None
                raise TrackingError(f"cannot open MLflow store {mask(self.tracking_uri)}: {_first_line(err)}") from None
            if self.workdir is not None and self.tracking_uri == default_tracking_uri(self.workdir):
                reroot(self.workdir)  # the work directory's own store, maybe moved since
        return self._client

    def check(self) -> None:
        """Open the store (and migrate a fresh SQLite one) or raise TrackingError."""
        _ = self.client

    @property
    def ui_base(self) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return mask(self.tracking_uri)  # a link is stored in the study: never its password
        return f"http://127.0.0.1:{UI_PORT}"

    def _objective(self, result: dict | None = None) -> str:
        default = self.spec.objective.metric if self.spec is not None else "objective"
        return rf.objective_of(result, default)

    # -- study --------------------------------------------------------------------------------
    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) or rename the study")
            if exp.tags.get(KIND_TAG) != KIND:
                self.client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
            return exp.experiment_id
        location = None
        if self.artifact_root:
            location = f"{self.artifact_root.rstrip('/')}/{name}"
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={KIND_TAG: KIND, TAG_STUDY: name})
        except Exception:  # noqa: BLE001 -- another worker may have created it meanwhile
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _find_runs(self, filter_string: str) -> list:
        return list(self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000,
                                            order_by=["attributes.start_time ASC"]))

    def on_study_start(self, study) -> str:
        """Open the study's experiment and parent run (created once, found again on resume)."""
        name = self.experiment_name or study.study_name
        self.experiment_id = self._experiment(name)
        run_id = study.user_attrs.get(STUDY_RUN_ATTR)
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except Exception:  # noqa: BLE001 -- the store was replaced: look up by tag instead
                logger.warning("parent run %s of study %s is gone from %s", run_id, study.study_name, mask(self.tracking_uri))
                run_id = None
        if run_id is None:
            found = self._find_runs(f"tags.`{TAG_STUDY}` = '{study.study_name}' and tags.`{TAG_ROLE}` = 'study'")
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            tags = {TAG_STUDY: study.study_name, TAG_ROLE: "study", "direction": study.direction.name.lower()}
            run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=study.study_name).info.run_id
            logger.info("MLflow: experiment %s, parent run %s", self.experiment_id, run_id)
        elif self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        study.set_user_attr(STUDY_RUN_ATTR, run_id)
        study.set_user_attr(STUDY_EXPERIMENT_ATTR, self.experiment_id)
        if self.spec is not None:
            from explorer.report.artifacts import study_params

            run = self.client.get_run(run_id)
            self._log(run_id, params=mb.params(study_params(self.spec), run.data.params), metrics=[], tags=[])
        self.sync(study)
        return run_id

    def on_study_end(self, study, status: str = "FINISHED") -> None:
        self.sync(study)
        self._log_ties(study)
        self.update_report(study)
        best = self._best(study)
        if best is not None:
            self.client.log_batch(self.parent_run_id, tags=mb.tags(
                {"best_trial": best.number, "best_experts": expert_letters(best.params, best.user_attrs)}))
        self.client.set_terminated(self.parent_run_id, status=status)

    def _log_ties(self, study) -> None:
        """Ties and paired comparisons (explorer.report.leaderboard.tie_marks) on the parent and trial runs."""
        from explorer.report.leaderboard import tie_marks

        parent, per_trial = tie_marks(study)
        for number, (metrics, tags) in per_trial.items():
            run_id = self._child(study, number, create=False)
            if run_id:
                self.client.log_batch(run_id, metrics=mb.metrics(metrics), tags=mb.tags(tags))
        self.client.log_batch(self.parent_run_id, tags=mb.tags(parent))

    @staticmethod
    def _best(study):
        try:
            return study.best_trial
        except ValueError:
            return None

    def update_report(self, study) -> list[Path]:
        """The parent run shows the study: its best objective and scores (the same columns as the
        trials'), its cost ledger (cost_* metrics), its rank transfer (rank_transfer/* metrics), and
        the report files, rewritten in the work directory and logged again."""
        self._reported_at = time.monotonic()
        best = self._best(study)
        done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
        if best is not None:
            scores = {f"{SCORE_PREFIX}{k}": v for k, v in trial_scores(best.user_attrs).items()}
            values = {self._objective(): rf.rounded(best.value), "n_complete": done, **scores}
            self.client.log_batch(self.parent_run_id, metrics=mb.metrics(values, step=done))
            lead = ["experts", "n_experts", "round", "candidate", "visual_tokens"]
            params = lead + [k for k in rf.setting_params(best.params, best.user_attrs) if k not in lead]
            view = view_state(self._objective(), study.direction.name == "MAXIMIZE",
                              [k for k in scores if "/" not in k[len(SCORE_PREFIX):]], params)
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG_PREFIX + VIEW_KEY, view)
        if self.spec is None or self.workdir is None:
            return []
        from explorer.report.artifacts import report_dir, write_report

        out = report_dir(self.workdir, study.study_name)
        files = write_report(study, self.spec, self.workdir, out)
        from explorer.report.rank_transfer import rank_transfer_metrics
        from explorer.study.ledger import ledger_metrics

        values = ledger_metrics(json.loads((out / "cost.json").read_text()))
        if out / "rank_transfer.json" in files:  # multi-fidelity: how each lower rung ranked as the top did
            values.update(rank_transfer_metrics(json.loads((out / "rank_transfer.json").read_text())))
        self.client.log_batch(self.parent_run_id, metrics=mb.metrics(values, step=done))
        self.client.log_artifacts(self.parent_run_id, str(out), artifact_path="report")
        return files

    def refresh_report(self, study) -> list[Path]:
        """Rewrite the report of a tracked study in its parent run, whatever the run's status."""
        self.experiment_id = study.user_attrs[STUDY_EXPERIMENT_ATTR]
        self.parent_run_id = study.user_attrs[STUDY_RUN_ATTR]
        return self.update_report(study)

    def sync(self, study) -> None:
        """Close child runs whose trial finished while no controller was watching (killed
        controller, another worker): their MLflow status follows the study database."""
        from optuna.trial import TrialState

        finished = {t.number: t for t in study.get_trials(deepcopy=False)
                    if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)}
        for run in self._find_runs(f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'"):
            number = run.data.tags.get(TAG_TRIAL)
            trial = finished.get(int(number)) if number is not None else None
            if trial is None or run.data.tags.get(TAG_LOGGED) == "true":
                continue
            trial_dir = trial.user_attrs.get("trial_dir")
            self._trial_end(study, trial, Path(trial_dir) if trial_dir else None)

    # -- trials -------------------------------------------------------------------------------
    def _ensure_started(self, study) -> None:
        if self.parent_run_id is None:
            self.on_study_start(study)

    def _child(self, study, number: int, create: bool, attrs: dict | None = None) -> str | None:
        run_id = (attrs or {}).get(TRIAL_RUN_ATTR)
        if run_id:
            return run_id
        found = self._find_runs(f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TAG_TRIAL}` = '{number}'")
        if found:
            return found[0].info.run_id
        if not create:
            return None
        tags = {PARENT_TAG: self.parent_run_id, TAG_STUDY: study.study_name, TAG_ROLE: "trial", TAG_TRIAL: str(number)}
        return self.client.create_run(self.experiment_id, tags=tags, run_name=f"#{number}").info.run_id

    def on_trial_start(self, study, number: int, trial_dir: str | Path | None = None) -> str | None:
        """Create (or find again) the trial's child run and tag it with what the trial is. A
        tracking failure mid-study is logged, not raised: the next start's sync catches up."""
        try:
            return self._trial_start(study, number, trial_dir)
        except Exception as err:  # noqa: BLE001 -- the study must not die for its bookkeeping
            logger.warning("MLflow: trial %d start not logged: %s", number, _first_line(err))
            return None

    def on_trial_end(self, study, frozen_trial, trial_dir: str | Path | None = None) -> str | None:
        """Log a finished trial (params, metrics, tags, artifacts, status), then the study's report."""
        self.live.finish(frozen_trial.number)
        try:
            run_id = self._trial_end(study, frozen_trial, trial_dir)
        except Exception as err:  # noqa: BLE001 -- see on_trial_start
            logger.warning("MLflow: trial %d results not logged: %s", frozen_trial.number, _first_line(err))
            return None
        try:
            if time.monotonic() - self._reported_at >= self.report_interval_s:
                self.update_report(study)
        except Exception as err:  # noqa: BLE001 -- a report that cannot be drawn costs no trial
            logger.warning("MLflow: study report not updated: %s", _first_line(err))
        return run_id

    def _trial_start(self, study, number: int, trial_dir: str | Path | None) -> str:
        self._ensure_started(study)
        stored = StoredStudy.of(study)
        trial_id = stored.trial_id(number)
        trial = stored.storage.get_trial(trial_id)
        run_id = self._child(study, number, create=True, attrs=trial.user_attrs)
        if trial.state.name == "RUNNING" and trial.user_attrs.get(TRIAL_RUN_ATTR) != run_id:
            stored.storage.set_trial_user_attr(trial_id, TRIAL_RUN_ATTR, run_id)
            stored.storage.set_trial_user_attr(trial_id, RUN_URL_ATTR, run_url(self.ui_base, self.experiment_id, run_id))
        experts = expert_letters(trial.params, trial.user_attrs)
        tags = self._trial_tags(trial, experts, "RUNNING")
        if trial_dir is not None:
            tags["trial_dir"] = self._where(trial_dir)
        run = self.client.get_run(run_id)
        params = rf.setting_params(trial.params, trial.user_attrs)
        self._log(run_id, params=mb.params(params, run.data.params), metrics=[], tags=mb.tags(tags))
        self.client.update_run(run_id, status="RUNNING", name=trial_label(experts, trial.user_attrs, number))
        if trial_dir is not None:
            self.live.watch(number, run_id, Path(trial_dir) / TD.METRICS)
        return run_id

    def _where(self, trial_dir: str | Path) -> str:
        """A trial directory as a tag: relative to the work directory, so a moved one still reads."""
        path = Path(trial_dir)
        if self.workdir is not None:
            try:
                return str(path.resolve().relative_to(self.workdir))
            except ValueError:
                pass
        return str(path)

    def _trial_tags(self, trial, experts: str, state: str) -> dict[str, Any]:
        tags = {"trial_number": trial.number, "state": state, "experts": experts}
        if "attempt" in trial.user_attrs:
            tags["attempt"] = trial.user_attrs["attempt"]
        rung = rung_tag(trial.user_attrs, self.spec)
        if rung:  # multi-fidelity: "full", or the rung and its share of the SFT steps ("r0 1/4")
            tags["rung"] = rung
        return tags

    def _trial_end(self, study, frozen_trial, trial_dir: str | Path | None) -> str:
        self._ensure_started(study)
        run_id = self._child(study, frozen_trial.number, create=True, attrs=frozen_trial.user_attrs)
        run = self.client.get_run(run_id)
        state = frozen_trial.state.name
        status = RUN_STATUS.get(state, "FAILED")
        if state == "FAIL" and "error" not in frozen_trial.user_attrs:
            status = "KILLED"  # its controller was stopped or died (no error): the study reruns it
        if run.data.tags.get(TAG_LOGGED) == "true":
            if run.info.status != status:
                self.client.set_terminated(run_id, status=status)
            return run_id
        trial_dir = Path(trial_dir) if trial_dir else None
        if trial_dir is None and frozen_trial.user_attrs.get("trial_dir"):
            trial_dir = Path(frozen_trial.user_attrs["trial_dir"])
        ua = frozen_trial.user_attrs
        experts = expert_letters(frozen_trial.params, ua)
        rec = run_record(frozen_trial, trial_dir, experts, self._objective())
        rows, objective = rec.rows, rec.objective
        metrics = mb.metrics(rec.values, step=rf.final_eval_step(rows))
        live = run.data.tags.get(LIVE_ROWS_TAG)
        if live is not None:  # its training rows went live: the evaluation rows and what came after
            n = int(live)
            rest = [r for r in rows[:n] if r.get("stage") == "eval"] + rows[n:]
            metrics = mb.step_metrics(rest, objective, rec.final_from_result) + metrics
        elif not run.data.metrics:  # a half-logged earlier attempt keeps its history
            metrics = mb.step_metrics(rows, objective, rec.final_from_result) + metrics
        tags = self._trial_tags(frozen_trial, experts, state)
        tags["objective_name"] = objective
        if ua.get("error"):
            tags["error"] = str(ua["error"])[:5000]
        self._log(run_id, params=mb.params(rec.params, run.data.params), metrics=metrics, tags=mb.tags(tags))
        if trial_dir is not None:
            mb.log_trial_files(self.client, run_id, trial_dir)
        label = trial_label(experts, ua, frozen_trial.number)
        if run.info.run_name != label:
            self.client.update_run(run_id, name=label)
        self.client.set_tag(run_id, TAG_LOGGED, "true")
        end_ms = int(frozen_trial.datetime_complete.timestamp() * 1000) if frozen_trial.datetime_complete else None
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
        return run_id

    def _log(self, run_id: str, params: list, metrics: list, tags: list) -> None:
        mb.log(self.client, run_id, params, metrics, tags)
