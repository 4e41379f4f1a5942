"""Two workers on one PostgreSQL study: every planned trial runs once, none twice."""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from explorer.study.storage import normalize_storage_url, planner_lock
from test_study_fixtures import PAPER_PATH, child_command, study_data



def test_postgresql_urls_use_psycopg2_and_bad_urls_are_one_line():
    from explorer.study.storage import StorageError, make_storage
    from explorer.study.load import parse_study
    from test_study_fixtures import study_data

    assert normalize_storage_url("postgresql://postgres@127.0.0.1:5432/test") == \
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    assert normalize_storage_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert normalize_storage_url("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"
    spec = parse_study(study_data("u", {"type": "greedy", "base": ["A", "B"]}), "u.yaml")
    with pytest.raises(StorageError, match="not a database URL") as err:
        make_storage(spec, "not a url")
    assert "\n" not in str(err.value)
    with pytest.raises(StorageError, match="cannot open the study database") as err:
        make_storage(spec, "postgresql://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    assert "\n" not in str(err.value)


@pytest.fixture
def pg_url(postgres_url):
    return normalize_storage_url(postgres_url)


@pytest.fixture
def study_name(pg_url):
    name = f"pg_{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=pg_url)
    except KeyError:
        pass


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_never_run_a_trial_twice(tmp_path, postgres_url, pg_url, study_name):
    data = study_data(study_name, {"type": "greedy", "base": ["A", "B"]}, resources={"max_concurrent_trials": 2},
                      storage=postgres_url)
    log = tmp_path / "runs.log"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = subprocess.Popen(child_command(tmp_path / "a", data, postgres_url, "run", 0.8, log),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the worker joins once `run` has created the study
        if study_name in {s.study_name for s in optuna.get_all_study_summaries(pg_url)}:
            break
        time.sleep(0.1)
    second = subprocess.Popen(child_command(tmp_path / "b", data, postgres_url, "worker", 0.8, log),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = []
    for proc in (first, second):
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs == [{"path": PAPER_PATH, "finished": True}] * 2

    runs = [line.split() for line in log.read_text().splitlines()]
    per_key = Counter(key for _, _, key in runs)
    assert len(per_key) == 11 and set(per_key.values()) == {1}, per_key
    assert len({pid for pid, _, _ in runs}) == 2  # both workers ran trials
    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    assert len(trials) == 11 and all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.postgres
def test_planner_lock_excludes_a_second_holder(postgres_url, study_name):
    import threading

    order = []

    def hold(tag):
        with planner_lock(postgres_url, study_name):
            order.append(f"{tag}+")
            time.sleep(0.3)
            order.append(f"{tag}-")

    threads = [threading.Thread(target=hold, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
