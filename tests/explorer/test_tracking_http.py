"""The same tracking against a real MLflow tracking server over http:// (started locally)."""
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from explorer.tracking import MlflowTracker
from test_report_support import scripted_study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
                             str(tmp_path / "served"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow server exited with {proc.returncode}")
                time.sleep(0.25)
        else:
            pytest.fail("mlflow server did not come up in 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


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
