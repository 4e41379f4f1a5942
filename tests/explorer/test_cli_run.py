"""`eagle-explore run` end to end through the real controller, tracker and progress display, with
scripted trials (the paper's figures) instead of training jobs."""
import json

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import explorer.controller
from explorer.cli.main import app
from test_report_support import TINY_BASE, PaperRunner

runner = CliRunner()


@pytest.mark.slow
def test_run_prints_leaderboard_path_and_ui_then_resumes_without_rerunning(tmp_path, monkeypatch):
    calls = PaperRunner()
    monkeypatch.setattr(explorer.controller, "LocalRunner", lambda: calls)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "cli-greedy", "strategy": {"type": "greedy", "base": ["A", "B"]}, "search_space": "eagle_tiny",
        "base_trial": TINY_BASE, "resources": {"max_concurrent_trials": 2},
        "heartbeat_interval_s": 1, "grace_period_s": 3, "poll_interval_s": 0.05}))
    work = tmp_path / "work"
    res = runner.invoke(app, ["run", str(study), "--workdir", str(work)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "leaderboard" in out and out.index("A+B+F+E+C ") < out.index("A+B+D ")
    assert "Greedy path: A+B (658.3) -> A+B+F (665.3) -> A+B+F+E (666.1) -> A+B+F+E+C (666.5) *best*" in out
    # with the study file, `ui` links straight to the study's runs table
    assert out.strip().splitlines()[-1] == f"Open the MLflow UI: eagle-explore ui {study} --workdir {work.resolve()}"
    assert calls.calls == 11 and (work / "study.db").is_file() and (work / "mlflow.db").is_file()

    res = runner.invoke(app, ["run", str(study), "--workdir", str(work)])  # resume: all done already
    assert res.exit_code == 0, res.output
    assert calls.calls == 11
    doc = json.loads(runner.invoke(app, ["status", str(study), "-w", str(work), "--json"]).stdout)
    assert doc["states"] == {"COMPLETE": 11} and all(t["mlflow_run_id"] for t in doc["trials"])
    client = MlflowClient(f"sqlite:///{work.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cli-greedy")
    assert len(client.search_runs([exp.experiment_id])) == 12
    assert client.get_run(doc["mlflow_parent_run_id"]).info.status == "FINISHED"
