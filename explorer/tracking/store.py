"""The work directory's own MLflow store: its URIs, artifacts that survive a move of the
directory, and how its UI server starts.

MLflow stores absolute artifact locations (an experiment's, and each run's under it). The embedded
store of a work directory keeps its artifacts in <workdir>/mlartifacts/<experiment>/, so when the
directory has moved, every location under an older `.../mlartifacts/` is pointed at the current
one. Stores a user gave (a server, PostgreSQL) keep their own locations and are left alone."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

ARTIFACT_DIR = "mlartifacts"
DB_NAME = "mlflow.db"
UI_PORT = 5000  # `eagle-explore ui`'s default: the run links of a local store point there
# MLflow 3.17's UI opens in its GenAI mode unless the link asks for model training; older 3.x
# read the experiment's kind tag instead
WORKFLOW = "workflowType=machine_learning"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# A view as the UI's own "share" button stores it (an experiment tag, opened by its key): the
# objective and the scores as columns, best first, every run in the charts (not the latest 10)
VIEW_TAG_PREFIX, VIEW_KEY = "mlflow.sharedViewState.", "eagle"


def default_tracking_uri(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / DB_NAME}"


def default_artifact_root(workdir: str | Path) -> str:
    return (Path(workdir).resolve() / ARTIFACT_DIR).as_uri()


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW}"


def experiment_url(ui_base: str, experiment_id: str) -> str:
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW}&viewStateShareKey={VIEW_KEY}"


def view_state(objective: str, maximize: bool, metrics: list[str], params: list[str]) -> str:
    """The runs table's view: objective first and sorted on, then `metrics` and `params` columns."""
    cols = [f"metrics.`{m}`" for m in [objective, *[m for m in metrics if m != objective]]]
    cols += [f"params.`{p}`" for p in params]
    return json.dumps({"orderByKey": f"metrics.`{objective}`", "orderByAsc": not maximize, "selectedColumns": cols,
                       "runsHiddenMode": "SHOW_ALL"})


def reroot(workdir: str | Path) -> int:
    """Re-point the work directory's MLflow store at its current place; returns how many
    locations changed (0 when it has not moved, or has no store yet)."""
    db = Path(workdir).resolve() / DB_NAME
    if not db.is_file():
        return 0
    import sqlalchemy as sa

    root = default_artifact_root(workdir)
    marker = f"/{ARTIFACT_DIR}/"
    engine = sa.create_engine(f"sqlite:///{db}")
    changed = 0
    try:
        with engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if not {"experiments", "runs"} <= tables:
                return 0
            exps = conn.execute(sa.text("SELECT experiment_id, artifact_location FROM experiments")).fetchall()
            for exp_id, location in exps:
                if not location or marker not in location or location.startswith(root + "/"):
                    continue
                old = location[: location.rindex(marker)] + f"/{ARTIFACT_DIR}"
                conn.execute(sa.text("UPDATE experiments SET artifact_location = :new WHERE experiment_id = :id"),
                             {"new": root + location[len(old):], "id": exp_id})
                res = conn.execute(sa.text(
                    "UPDATE runs SET artifact_uri = :root || substr(artifact_uri, :n) "
                    "WHERE experiment_id = :id AND substr(artifact_uri, 1, :k) = :old"),
                    {"root": root, "n": len(old) + 1, "id": exp_id, "k": len(old), "old": old})
                changed += 1 + (res.rowcount or 0)
                logger.info("MLflow artifacts of experiment %s: %s -> %s", exp_id, old, root)
    finally:
        engine.dispose()
    if changed:
        _forget_artifact_repos()
    return changed


def _forget_artifact_repos() -> None:
    """MLflow caches each run's artifact store by run id for the life of the process: a run
    re-pointed here must not keep writing to its old place."""
    try:
        from mlflow.tracking._tracking_service import utils
    except ImportError:
        return
    cache = getattr(utils, "_artifact_repos_cache", None)
    if cache is not None:
        cache.clear()


def ui_environment() -> dict[str, str]:
    """The MLflow UI's environment: no job runners (they serve GenAI features a study never uses)."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
