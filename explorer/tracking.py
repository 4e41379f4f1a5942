"""MLflow tracking of a study: one experiment and one parent run per study, one child run per trial.

Every run is found again by its tags (study name, trial number), so a resumed study, or a second
controller on the same study, keeps logging to the same runs instead of creating duplicates.
"""
from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

import yaml

from explorer.stats import interval_metrics

logger = logging.getLogger(__name__)

# Study user attrs (set here) and trial user attrs (set here, read by report/status).
STUDY_RUN_ATTR = "mlflow_parent_run_id"
STUDY_EXPERIMENT_ATTR = "mlflow_experiment_id"
TRIAL_RUN_ATTR = "mlflow_run_id"

TAG_STUDY = "eagle.study"
TAG_ROLE = "eagle.role"
TAG_TRIAL = "eagle.trial_number"
TAG_LOGGED = "eagle.logged"  # set once a trial's results are in: a resumed study never logs twice
PARENT_TAG = "mlflow.parentRunId"

# Optuna TrialState name -> MLflow RunStatus name.
RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}

# log_batch limits of the MLflow REST API (the SQL store accepts the same).
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
_MAX_PARAM_LEN = 6000


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, bad URI, deleted experiment)."""


def default_tracking_uri(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def default_artifact_root(workdir: str | Path) -> str:
    return (Path(workdir).resolve() / "mlartifacts").as_uri()


def flatten(data: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts/lists -> {"a.b.0.c": leaf}; empty containers are kept as their JSON text."""
    out: dict[str, Any] = {}
    if isinstance(data, dict) and data:
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{sep}{key}" if prefix else str(key), sep))
    elif isinstance(data, list) and data:
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{sep}{i}" if prefix else str(i), sep))
    else:
        out[prefix] = json.dumps(data) if isinstance(data, (dict, list)) else data
    return out


def expert_letters(params: dict[str, Any], user_attrs: dict[str, Any]) -> str:
    """The expert set as the paper writes it ("A+B+F"): the trial's own order if it recorded one."""
    if user_attrs.get("experts"):
        return str(user_attrs["experts"])
    letters = [k.split("_", 1)[1] for k, v in sorted(params.items()) if k.startswith("expert_") and v]
    return "+".join(letters)


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _read(path: Path, parse=json.loads) -> Any:
    """A trial file's content, None when missing or unreadable (logged: a half-written trial)."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, yaml.YAMLError) as err:
        logger.warning("cannot read %s: %s", path, err)
        return None


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
        raise TrackingError(f"MLflow tracking server {uri} is unreachable: {reason}") from None


class MlflowTracker:
    """Logs a study to MLflow. The controller calls on_study_start once, then per trial
    on_trial_start (returns the child run id, also stored as the trial's `mlflow_run_id` user attr)
    and on_trial_end, and on_study_end when the study is finished."""

    def __init__(self, tracking_uri: str, experiment_name: str | None = None, artifact_root: str | None = None):
        if not tracking_uri or "://" not in tracking_uri:
            raise TrackingError(f"tracking URI {tracking_uri!r} is not a URI (sqlite:///PATH, http://HOST:PORT, file:///DIR)")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_root = artifact_root
        self._client = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None

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
                raise TrackingError(f"cannot open MLflow store {self.tracking_uri}: {str(err).splitlines()[0]}") from None
        return self._client

    def check(self) -> None:
        """Open the store (and migrate a fresh SQLite one) or raise TrackingError."""
        _ = self.client

    # -- study --------------------------------------------------------------------------------
    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) or rename the study")
            return exp.experiment_id
        location = None
        if self.artifact_root:
            location = f"{self.artifact_root.rstrip('/')}/{name}"
        try:
            return self.client.create_experiment(name, artifact_location=location)
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
                logger.warning("parent run %s of study %s is gone from %s", run_id, study.study_name, self.tracking_uri)
                run_id = None
        if run_id is None:
            found = self._find_runs(f"tags.`{TAG_STUDY}` = '{study.study_name}' and tags.`{TAG_ROLE}` = 'study'")
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            tags = {TAG_STUDY: study.study_name, TAG_ROLE: "study",
                    "direction": study.direction.name.lower()}
            run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=study.study_name).info.run_id
            logger.info("MLflow: experiment %s, parent run %s", self.experiment_id, run_id)
        elif self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        study.set_user_attr(STUDY_RUN_ATTR, run_id)
        study.set_user_attr(STUDY_EXPERIMENT_ATTR, self.experiment_id)
        self.sync(study)
        return run_id

    def on_study_end(self, study, status: str = "FINISHED") -> None:
        self.sync(study)
        self._log_ties(study)
        best = self._best(study)
        if best is not None:
            self.client.log_batch(self.parent_run_id, metrics=self._metrics({"best_value": best.value}),
                                  tags=self._tags({"best_trial": best.number,
                                                   "best_experts": expert_letters(best.params, best.user_attrs)}))
        self.client.set_terminated(self.parent_run_id, status=status)

    def _log_ties(self, study) -> None:
        """Ties and paired comparisons (explorer.report.tie_marks) on the parent and trial runs."""
        from explorer.report import tie_marks

        parent, per_trial = tie_marks(study)
        for number, (metrics, tags) in per_trial.items():
            run_id = self._child(study, number, create=False)
            if run_id:
                self.client.log_batch(run_id, metrics=self._metrics(metrics), tags=self._tags(tags))
        self.client.log_batch(self.parent_run_id, tags=self._tags(parent))

    @staticmethod
    def _best(study):
        try:
            return study.best_trial
        except ValueError:
            return None

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
        return self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial-{number:04d}").info.run_id

    def on_trial_start(self, study, number: int, trial_dir: str | Path | None = None) -> str | None:
        """Create (or find again) the trial's child run and tag it with what the trial is. A
        tracking failure mid-study is logged, not raised: the next start's sync catches up."""
        try:
            return self._trial_start(study, number, trial_dir)
        except Exception as err:  # noqa: BLE001 -- the study must not die for its bookkeeping
            logger.warning("MLflow: trial %d start not logged: %s", number, str(err).splitlines()[0] if str(err) else err)
            return None

    def on_trial_end(self, study, frozen_trial, trial_dir: str | Path | None = None) -> str | None:
        """Log a finished trial: params, tags, metrics, scores, system metrics, artifacts, status."""
        try:
            return self._trial_end(study, frozen_trial, trial_dir)
        except Exception as err:  # noqa: BLE001 -- see on_trial_start
            logger.warning("MLflow: trial %d results not logged: %s", frozen_trial.number,
                           str(err).splitlines()[0] if str(err) else err)
            return None

    def _trial_start(self, study, number: int, trial_dir: str | Path | None) -> str:
        self._ensure_started(study)
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        trial = study._storage.get_trial(trial_id)
        run_id = self._child(study, number, create=True, attrs=trial.user_attrs)
        if trial.state.name == "RUNNING" and trial.user_attrs.get(TRIAL_RUN_ATTR) != run_id:
            study._storage.set_trial_user_attr(trial_id, TRIAL_RUN_ATTR, run_id)
        experts = expert_letters(trial.params, trial.user_attrs)
        tags = self._trial_tags(trial, experts, "RUNNING")
        if trial_dir is not None:
            tags["trial_dir"] = str(trial_dir)
        self.client.log_batch(run_id, tags=self._tags(tags))
        self.client.update_run(run_id, status="RUNNING", name=f"trial-{number:04d} {experts}".strip())
        return run_id

    @staticmethod
    def _trial_tags(trial, experts: str, state: str) -> dict[str, Any]:
        tags = {"trial_number": trial.number, "state": state, "experts": experts}
        for key in ("round", "candidate", "seed", "attempt"):
            if key in trial.user_attrs:
                tags[key] = trial.user_attrs[key]
        for key, value in trial.params.items():
            if key.startswith("expert_"):
                tags[f"expert.{key.split('_', 1)[1]}"] = str(bool(value)).lower()
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
        experts = expert_letters(frozen_trial.params, frozen_trial.user_attrs)
        params = {f"optuna.{k}": v for k, v in frozen_trial.params.items()}
        spec = _read(trial_dir / "trial.yaml", yaml.safe_load) if trial_dir else None
        if spec:
            params.update({f"spec.{k}": v for k, v in flatten(spec).items()})
        result = _read(trial_dir / "result.json") if trial_dir else None
        metrics: list = []
        if not run.data.metrics and trial_dir is not None:  # a half-logged earlier attempt keeps its history
            metrics = self._step_metrics(trial_dir / "metrics.jsonl")
        metrics += self._metrics(self._result_metrics(result, frozen_trial.value))
        tags = self._trial_tags(frozen_trial, experts, state)
        if result and result.get("objective_name"):
            tags["objective_name"] = result["objective_name"]
        if frozen_trial.user_attrs.get("error"):
            tags["error"] = str(frozen_trial.user_attrs["error"])[:5000]
        self._log(run_id, params=self._params(params, run.data.params), metrics=metrics, tags=self._tags(tags))
        if trial_dir is not None:
            self._artifacts(run_id, trial_dir)
        self.client.set_tag(run_id, TAG_LOGGED, "true")
        end_ms = int(frozen_trial.datetime_complete.timestamp() * 1000) if frozen_trial.datetime_complete else None
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
        return run_id

    # -- pieces -------------------------------------------------------------------------------
    def _step_metrics(self, path: Path) -> list:
        """metrics.jsonl -> MLflow metrics keyed `<stage>/<name>` at their step."""
        from mlflow.entities import Metric

        out = []
        if not path.is_file():
            return out
        now = int(time.time() * 1000)
        for n, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: not JSON, skipped", path, n + 1)
                continue
            stage, step = str(row.get("stage", "train")), int(row.get("step", n))
            t = row.get("time")
            stamp = int(t * 1000) if isinstance(t, (int, float)) and t > 1e9 else now
            for key, value in row.items():
                if key in ("stage", "step", "time") or not _is_number(value):
                    continue
                out.append(Metric(f"{stage}/{key}", float(value), stamp, step))
        return out

    @staticmethod
    def _result_metrics(result: dict | None, value: float | None) -> dict[str, float]:
        out: dict[str, float] = {}
        if value is not None:
            out["objective"] = value
        if not result:
            return out
        for bench, score in (result.get("scores") or {}).items():
            out[f"score/{bench}"] = score
        out.update(interval_metrics(result))
        if result.get("objective") is not None:
            out["objective"] = result["objective"]
        for key in ("heldout_loss", "peak_memory_mb"):
            if result.get(key) is not None:
                out[key if key == "heldout_loss" else f"system/{key}"] = result[key]
        for stage, secs in (result.get("stage_time_s") or {}).items():
            out[f"system/stage_time_s/{stage}"] = secs
        for stage, rates in (result.get("throughput") or {}).items():
            for key, rate in (rates or {}).items():
                out[f"system/throughput/{stage}/{key}"] = rate
        for stage, steps in (result.get("steps") or {}).items():
            out[f"system/steps/{stage}"] = steps
        if result.get("world_size") is not None:
            out["system/world_size"] = result["world_size"]
        return {k: float(v) for k, v in out.items() if _is_number(v)}

    @staticmethod
    def _metrics(values: dict[str, float]) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(k, float(v), now, 0) for k, v in values.items()]

    @staticmethod
    def _params(values: dict[str, Any], existing: dict[str, str]) -> list:
        from mlflow.entities import Param

        out = []
        for key, value in values.items():
            text = str(value)[:_MAX_PARAM_LEN]
            if key in existing:  # params are immutable in MLflow; a resume logs only new ones
                continue
            out.append(Param(key[:250], text))
        return out

    @staticmethod
    def _tags(values: dict[str, Any]) -> list:
        from mlflow.entities import RunTag

        return [RunTag(k, str(v)) for k, v in values.items()]

    def _log(self, run_id: str, params: list, metrics: list, tags: list) -> None:
        for chunk in _chunks(params, _MAX_PARAMS):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tags, _MAX_TAGS):
            self.client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(metrics, _MAX_METRICS):
            self.client.log_batch(run_id, metrics=chunk)

    def _artifacts(self, run_id: str, trial_dir: Path) -> None:
        for name in ("trial.yaml", "result.json", "metrics.jsonl"):
            if (trial_dir / name).is_file():
                self.client.log_artifact(run_id, str(trial_dir / name))
        for sub in ("predictions", "logs"):
            if (trial_dir / sub).is_dir() and any((trial_dir / sub).iterdir()):
                self.client.log_artifacts(run_id, str(trial_dir / sub), artifact_path=sub)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
