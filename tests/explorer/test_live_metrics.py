"""Live MLflow: a running trial's training rows reach its run while it trains, survive a tracking
outage without losing a point, and the end-of-trial logging adds exactly the rest."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from explorer.tracking.live_metrics import LIVE_ROWS_TAG, LiveMetrics
from mlflow_server_support import free_port, start_server, stop_server


def _append(path: Path, rows: list[dict]) -> None:
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _sft(step: int) -> dict:
    return {"stage": "sft", "tag": "sft", "step": step, "loss": 3.0 / step, "lr": 1e-3, "time": time.time()}


def _history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_training_rows_go_live_and_eval_rows_wait_for_the_result(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("live")).info.run_id
    path = tmp_path / "metrics.jsonl"
    _append(path, [_sft(s) for s in (1, 2, 3)] + [{"stage": "eval", "step": 3, "gqa": 50.0}])
    live = LiveMetrics(lambda: client, interval_s=3600)  # shipped by hand below
    live.watch(0, run_id, path)
    live._ship(live._watched[0])
    assert _history(client, run_id, "sft/loss") == [1, 2, 3] and not client.get_metric_history(run_id, "score/gqa")
    _append(path, [_sft(4)])
    live.finish(0)
    assert _history(client, run_id, "sft/loss") == [1, 2, 3, 4]
    assert client.get_run(run_id).data.tags[LIVE_ROWS_TAG] == "5"


def test_a_resumed_attempt_truncating_the_file_is_followed(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("live")).info.run_id
    path = tmp_path / "metrics.jsonl"
    _append(path, [_sft(s) for s in (1, 2, 3)])
    live = LiveMetrics(lambda: client, interval_s=3600)
    live.watch(0, run_id, path)
    live._ship(live._watched[0])
    path.write_text("")  # resume from step 1's checkpoint: the file is cut back, then grows again
    _append(path, [_sft(1), {**_sft(2), "loss": 9.0}, _sft(3), _sft(4)])
    live.finish(0)
    losses = {m.step: m.value for m in client.get_metric_history(run_id, "sft/loss")}
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] == pytest.approx(0.75)


@pytest.mark.slow
def test_a_sixty_second_outage_during_a_trial_loses_no_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast: the buffer is the retry
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    port = free_port()
    server = start_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    client = MlflowClient(url)
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    path = tmp_path / "metrics.jsonl"
    live = LiveMetrics(lambda: MlflowClient(url), interval_s=0.5)
    live.watch(0, run_id, path)
    written, stop = [0], threading.Event()

    def trial() -> None:  # a trial logging one step every 0.2 s, whatever the server does
        while not stop.is_set():
            written[0] += 1
            _append(path, [_sft(written[0])])
            time.sleep(0.2)

    writer = threading.Thread(target=trial)
    writer.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and len(_history(client, run_id, "sft/loss")) < 10:
            time.sleep(0.2)
        assert len(_history(client, run_id, "sft/loss")) >= 10  # curves appear while it trains
        stop_server(server)
        time.sleep(60)
        server = start_server(tmp_path, port)
        time.sleep(3)
    finally:
        stop.set()
        writer.join()
    live.finish(0)
    live.close()
    try:
        assert _history(MlflowClient(url), run_id, "sft/loss") == list(range(1, written[0] + 1))
    finally:
        stop_server(server)
