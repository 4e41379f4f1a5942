"""Kill the controller (SIGKILL) mid-trial at several points; running the same study again
completes it with every planned trial COMPLETE exactly once and the paper's greedy path."""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from explorer.controller import run_study
from explorer.study.storage import default_storage_url
from explorer.study.load import parse_study
from test_study_fixtures import HOLD_MARK, PAPER_PATH, child_command, paper_runner, study_data

pytestmark = pytest.mark.slow
DATA = study_data("resume", {"type": "greedy", "base": ["A", "B"]}, resources={"max_concurrent_trials": 2},
                  grace_period_s=3)


def _trials(url):
    try:
        return optuna.load_study(study_name="resume", storage=url).get_trials()
    except KeyError:  # not created yet
        return []


def _kill_when(tmp, data, url, log, n_complete, timeout=60.0):
    """Start a controller and SIGKILL it once n_complete trials are done and one is running: the
    first trial to start after n_complete are done holds (and says so in a mark file)."""
    cmd = child_command(tmp, data, url, "run", 0.6, log, hold_from=n_complete)
    mark = tmp / HOLD_MARK
    mark.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if mark.exists():
                proc.kill()
                proc.wait()
                trials = _trials(url)
                assert any(t.state == TrialState.RUNNING for t in trials)
                return sum(t.state == TrialState.COMPLETE for t in trials)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        raise AssertionError(f"never reached {n_complete} complete trials")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_at_several_points_then_resume(tmp_path):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref = run_study(parse_study(DATA, "ref.yaml", ref_dir), default_storage_url(ref_dir), ref_dir,
                    runner=paper_runner)
    assert ref.greedy_path == PAPER_PATH

    url = default_storage_url(tmp_path)
    log = tmp_path / "runs.log"
    cmd = child_command(tmp_path, DATA, url, "run", 0.6, log)
    killed_at = [_kill_when(tmp_path, DATA, url, log, n) for n in (0, 3, 6, 9)]
    assert killed_at == sorted(killed_at) and killed_at[-1] < 11

    final = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stderr[-2000:]
    out = json.loads(final.stdout.strip().splitlines()[-1])
    trials = _trials(url)
    history = [(t.number, t.user_attrs.get("key"), t.state.name, t.user_attrs.get("error")) for t in trials]
    assert out == {"path": ref.greedy_path, "finished": True}, (history, final.stderr[-3000:])

    complete = Counter(t.user_attrs["key"] for t in trials if t.state == TrialState.COMPLETE)
    assert len(complete) == 11 and set(complete.values()) == {1}
    ref_keys = {t.user_attrs["key"] for t in optuna.load_study(study_name="resume",
                                                                 storage=default_storage_url(ref_dir)).get_trials()}
    assert set(complete) == ref_keys
    # the trials that were running at each kill were detected (heartbeat) and run again
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) >= 4 and all("error" not in t.user_attrs for t in interrupted)
    assert all(t.user_attrs["key"] in complete for t in interrupted)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # nothing ran more often than it has attempts in the database: a completed trial never ran again
    # (an attempt killed between its claim and its start has no run)
    runs = Counter(line.split()[2] for line in log.read_text().splitlines())
    attempts = Counter(t.user_attrs["key"] for t in trials)
    assert set(runs) == set(complete)
    assert all(1 <= runs[k] <= attempts[k] for k in complete)


def test_rerun_on_the_same_machine_does_not_wait_for_the_grace_period(tmp_path):
    # the killed controller's process is visibly gone here: its running trial is re-run at once,
    # not after grace_period_s (120 s) without a heartbeat
    data = dict(DATA, grace_period_s=120)
    url = default_storage_url(tmp_path)
    log = tmp_path / "runs.log"
    cmd = child_command(tmp_path, data, url, "run", 0.6, log)
    _kill_when(tmp_path, data, url, log, 2)
    cut = [t.number for t in _trials(url) if t.state == TrialState.RUNNING]
    assert cut
    t0 = time.monotonic()
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=110)
    assert final.returncode == 0, final.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    assert json.loads(final.stdout.strip().splitlines()[-1]) == {"path": PAPER_PATH, "finished": True}
    trials = {t.number: t for t in _trials(url)}
    assert all(trials[n].state == TrialState.FAIL and trials[n].user_attrs.get("interrupted") for n in cut)
