"""`eagle-explore eval` logs its results to the evaluated trial's MLflow run (found by the run's
`trial_dir` tag, as the tracker writes it), and evaluates all the same without a store or a run."""
import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from explorer.cli.main import app
from explorer.tracking.eval_run import log_eval, metric_key
from explorer.tracking.store import DB_NAME, default_artifact_root, default_tracking_uri
from explorer.tracking.tracker import MlflowTracker
from tests.trainers.helpers_eagle import ROOT, finished_trial

runner = CliRunner()

# Under the lmms interpreter (tests/trainers/lmms_local_task.py says why it loads by path): a
# local lmms-eval task over 4 synthetic GQA items, then `eval --harness lmms-eval` on argv[1].
LMMS_EVAL = """
import importlib.util, sys
from pathlib import Path
trial = Path(sys.argv[1]); work = trial.parents[2]
spec = importlib.util.spec_from_file_location("lmms_local_task", "tests/trainers/lmms_local_task.py")
task = importlib.util.module_from_spec(spec); spec.loader.exec_module(task)
from trainers.eval.benchmarks import get_benchmark
from trainers.eval.synthetic_suite import ensure_suite
from explorer.cli.main import app
items = get_benchmark("gqa").load(ensure_suite(work / "cache", 6, 0, 32) / "gqa")[:4]
app(["eval", str(trial), "--harness", "lmms-eval", "--tasks", "eagle_tiny_gqa",
     "--include-path", str(task.local_task(work / "lmms", items)), "--workdir", str(work)])
"""


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return finished_trial(tmp_path_factory.mktemp("eval_mlflow"))


def _work(trial):
    return trial.parents[2]  # <workdir>/trials/<study>/<trial>


def _store(work, tags: dict[str, str]) -> tuple[MlflowClient, str]:
    """The work directory's store with one experiment and one run tagged `tags`."""
    client = MlflowClient(default_tracking_uri(work))
    name = f"study-{len(client.search_experiments())}"
    exp = client.create_experiment(name, artifact_location=f"{default_artifact_root(work)}/{name}")
    return client, client.create_run(exp, tags=tags).info.run_id


def _eval(trial, *args):
    return runner.invoke(app, ["eval", str(trial), "--benchmarks", "gqa,pope", "--limit", "2",
                               "--workdir", str(_work(trial)), *args])


def test_builtin_eval_logs_scores_and_files_to_the_trial_run(trial):
    work = _work(trial)
    tag = MlflowTracker(default_tracking_uri(work), workdir=work)._where(trial)
    assert tag == "trials/tiny_greedy_v2/r1__A+B__s0"  # relative to the work directory
    client, run_id = _store(work, {"trial_dir": tag})
    _, other = _store(work, {"trial_dir": "trials/tiny_greedy_v2/other"})
    client.log_metric(run_id, "score/gqa", 1.0)

    res = _eval(trial)
    assert res.exit_code == 0, res.output
    assert f"logged to MLflow run {run_id}" in res.output
    result = json.loads((trial / "eval" / "eval_result.json").read_text())
    metrics = client.get_run(run_id).data.metrics
    scores = {k: v for k, v in result["scores"].items() if isinstance(v, (int, float))}
    assert scores and "pope/random/f1" in scores  # sub-figures keep their path
    for bench, value in scores.items():
        assert metrics[f"eval/builtin/{bench}"] == pytest.approx(value)
    assert metrics["eval/builtin/objective"] == pytest.approx(result["objective"])
    assert metrics["score/gqa"] == 1.0  # the trial's own metric is left alone
    assert not client.get_run(other).data.metrics

    files = {a.path for a in client.list_artifacts(run_id, "eval/builtin")}
    assert files == {"eval/builtin/eval_result.json", "eval/builtin/predictions"}
    preds = {a.path for a in client.list_artifacts(run_id, "eval/builtin/predictions")}
    assert "eval/builtin/predictions/gqa.jsonl" in preds

    res = _eval(trial, "--no-mlflow", "--out", str(work / "quiet"))
    assert res.exit_code == 0, res.output
    assert "MLflow" not in res.output


@pytest.mark.slow
def test_lmms_eval_logs_the_same_way(tmp_path):
    from tests.trainers.lmms_local_task import lmms_python

    python = lmms_python()  # skips without the lmms interpreter
    trial = finished_trial(tmp_path)
    client, run_id = _store(tmp_path, {"trial_dir": "trials/tiny_greedy_v2/r1__A+B__s0"})
    proc = subprocess.run([python, "-c", LMMS_EVAL, str(trial)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"logged to MLflow run {run_id}" in proc.stderr
    scores = json.loads((trial / "eval" / "lmms_eval" / "results.json").read_text())["scores"]
    assert scores and client.get_run(run_id).data.metrics == {f"eval/lmms-eval/{k}": v for k, v in scores.items()}
    files = {a.path for a in client.list_artifacts(run_id, "eval/lmms-eval")}
    assert files == {"eval/lmms-eval/results.json", "eval/lmms-eval/samples_eagle_tiny_gqa.jsonl"}


def test_eval_without_store_or_run_still_succeeds(tmp_path):
    trial = finished_trial(tmp_path)
    res = _eval(trial)
    assert res.exit_code == 0, res.output
    assert (trial / "eval" / "eval_result.json").is_file()
    assert "no MLflow store" in res.output and "logged to MLflow run" not in res.output
    assert not (tmp_path / DB_NAME).exists()  # no store is created for a hand-run trial

    _store(tmp_path, {"trial_dir": "trials/elsewhere"})  # a store, but no run of this trial
    assert log_eval(default_tracking_uri(tmp_path), tmp_path, trial, "builtin", {"gqa": 1.0},
                    [trial / "eval" / "eval_result.json"]) is None


def test_trial_outside_the_workdir_matches_its_absolute_tag(tmp_path):
    work, trial = tmp_path / "work", tmp_path / "elsewhere" / "t0"
    trial.mkdir(parents=True)
    (trial / "results.json").write_text("{}")
    work.mkdir()
    client, run_id = _store(work, {"trial_dir": MlflowTracker(default_tracking_uri(work), workdir=work)._where(trial)})
    scores = {"gqa_lite/exact_match": 0.5, "mme/perception score": 1200.0}
    assert log_eval(default_tracking_uri(work), work, trial, "lmms-eval", scores, [trial / "results.json"]) == run_id
    metrics = client.get_run(run_id).data.metrics
    assert metrics == {"eval/lmms-eval/gqa_lite/exact_match": 0.5, "eval/lmms-eval/mme/perception score": 1200.0}
    assert [a.path for a in client.list_artifacts(run_id, "eval/lmms-eval")] == ["eval/lmms-eval/results.json"]


def test_metric_key_keeps_what_mlflow_accepts():
    assert metric_key("builtin", "pope/random/f1") == "eval/builtin/pope/random/f1"
    assert metric_key("lmms-eval", "mmmu:val/acc,none") == "eval/lmms-eval/mmmu_val/acc_none"
    assert metric_key("lmms-eval", "a//../b") == "eval/lmms-eval/a/b"
