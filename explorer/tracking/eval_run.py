"""`eagle-explore eval` results into the evaluated trial's MLflow run.

The run is found by its `trial_dir` tag (the tracker writes it relative to the work directory, or
absolute for a trial outside it). Metrics are `eval/<harness>/<key>` (the trial's own are
`score/<bench>`, `<stage>/<name>`: no clash); files go to the artifact folder `eval/<harness>/`.
A trial with no store or no run (a hand-run trial) is evaluated all the same: nothing is logged."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from explorer.redact import mask
from explorer.tracking import batch as mb
from explorer.tracking.store import DB_NAME, default_tracking_uri, reroot

logger = logging.getLogger(__name__)

PREFIX = "eval"


def metric_key(harness: str, key: str) -> str:
    """`eval/<harness>/<key>` with what MLflow refuses in a metric name (':' on Windows too) as '_'."""
    parts = [re.sub(r"[^\w.\- ]", "_", p) for p in f"{harness}/{key}".split("/")]
    return "/".join([PREFIX, *[p for p in parts if p.strip(".")]])


def _tag_forms(workdir: Path, trial_dir: Path) -> list[str]:
    """The `trial_dir` tag the tracker may have written for this directory (tracker._where)."""
    path = trial_dir.resolve()
    forms = [str(path)]
    try:
        forms.insert(0, str(path.relative_to(workdir.resolve())))
    except ValueError:
        pass
    return forms


def find_trial_run(client, workdir: Path, trial_dir: Path):
    """The trial's run in any experiment of the store, or None; a retried trial's finished run first."""
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not exp_ids:
        return None
    for tag in _tag_forms(workdir, trial_dir):
        quoted = tag.replace("\\", "\\\\").replace("'", "\\'")
        runs = client.search_runs(exp_ids, filter_string=f"tags.trial_dir = '{quoted}'",
                                  order_by=["attributes.start_time DESC"], max_results=50)
        if runs:
            return next((r for r in runs if r.info.status == "FINISHED"), runs[0])
    return None


def log_eval(tracking_uri: str, workdir: Path, trial_dir: Path, harness: str, scores: dict[str, float],
             files: list[Path]) -> str | None:
    """Log `scores` and `files` (files or folders) to the trial's run; its id, or None without one."""
    workdir = Path(workdir).resolve()
    own_store = tracking_uri == default_tracking_uri(workdir)
    if own_store and not (workdir / DB_NAME).is_file():
        logger.info("no MLflow store in %s (--workdir): results not logged to MLflow", workdir)
        return None
    from mlflow.tracking import MlflowClient

    if own_store:
        reroot(workdir)  # a moved work directory: its runs' artifacts point at the current place
    client = MlflowClient(tracking_uri=tracking_uri)
    run = find_trial_run(client, workdir, Path(trial_dir))
    if run is None:
        logger.info("no MLflow run of %s in %s: results not logged to MLflow", trial_dir, mask(tracking_uri))
        return None
    run_id = run.info.run_id
    metrics = mb.metrics({metric_key(harness, k): v for k, v in scores.items()})
    mb.log(client, run_id, params=[], metrics=metrics, tags=[])
    folder = f"{PREFIX}/{harness}"
    for path in files:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=f"{folder}/{path.name}")
        elif path.is_file():
            client.log_artifact(run_id, str(path), artifact_path=folder)
    return run_id
