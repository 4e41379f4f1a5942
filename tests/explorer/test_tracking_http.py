"""The same tracking against a real MLflow tracking server over http:// (started locally)."""
import pytest
from mlflow.tracking import MlflowClient

from explorer.tracking.tracker import MlflowTracker
from mlflow_server_support import free_port, start_server, stop_server
from test_report_support import scripted_study


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    try:
        proc = start_server(tmp_path, port)
    except RuntimeError as err:
        pytest.fail(str(err))
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.mark.slow
def test_http_server_gets_parent_children_and_artifacts(tmp_path, mlflow_server):
    tracker = MlflowTracker(mlflow_server, "over-http")
    study = scripted_study(f"sqlite:///{tmp_path / 'study.db'}", tmp_path, tracker=tracker, stop_after=2)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("over-http")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3
    child = next(r for r in runs if r.data.tags.get("experts") == "A+B")
    assert child.info.status == "FINISHED" and child.data.metrics["avg"] == pytest.approx(658.3)
    assert {"trial.yaml", "result.json", "predictions", "logs"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
    assert (tmp_path / "served").is_dir()  # artifacts went through the server, into its store
    assert study.user_attrs["mlflow_parent_run_id"] in {r.info.run_id for r in runs}
