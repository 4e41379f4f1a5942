"""A study that achieved nothing does not exit 0: no complete trial, or a round where every
candidate failed, ends `run` with exit 1 and why (failures by class, one trial's log)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import explorer.controller
from explorer.cli.main import app
from explorer.backends.base import RunnerError
from test_study_fixtures import BASE_TRIAL
from trainers.training.logging_utils import find_error

runner = CliRunner()


class FailingRunner:
    """Writes a trial log like torchrun's and fails the expert sets in `fail` (all when None)."""

    def __init__(self, fail: set[str] | None = None):
        self.fail, self.calls = fail, 0

    def __call__(self, job):
        self.calls += 1
        experts = job.user_attrs["experts"]
        if self.fail is not None and experts not in self.fail:
            return {"objective": 600.0 + len(experts), "objective_name": "avg"}
        logs = Path(job.trial_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "torchrun.log").write_text(
            "[rank0]: Traceback (most recent call last):\n"
            f"[rank0]: experts.errors.ExpertConfigError: expert 'tiny-sam': cannot reach the grid ({experts})\n"
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n")
        raise RunnerError(f"trial process exited with 1 (log {logs / 'launcher.log'})")


def _run(tmp_path, monkeypatch, fake, **strategy):
    monkeypatch.setattr(explorer.controller, "LocalRunner", lambda: fake)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "fails", "strategy": {"type": "greedy", "base": ["A", "B"], **strategy},
        "search_space": "eagle_tiny", "base_trial": BASE_TRIAL, "heartbeat_interval_s": 1, "grace_period_s": 3,
        "poll_interval_s": 0.05}))
    return runner.invoke(app, ["run", str(study), "--workdir", str(tmp_path / "work")], env={"COLUMNS": "200"})


@pytest.mark.slow
def test_no_complete_trial_exits_1_with_the_failure_classes_and_a_log(tmp_path, monkeypatch):
    fake = FailingRunner()
    res = _run(tmp_path, monkeypatch, fake, candidates=["C"], max_size=2)  # the base alone (round 1 would start beside it)
    assert res.exit_code == 1, res.output
    assert fake.calls == 1  # the base round failed: the study stopped there
    err = res.stderr
    assert "study fails failed: no trial of 1 completed" in err
    assert "1 x ExpertConfigError (trial 0): expert 'tiny-sam': cannot reach the grid (A+B)" in err
    log = tmp_path / "work" / "trials" / "fails" / "r0__A+B__s0" / "logs" / "torchrun.log"  # the planned trial's directory
    assert f"log of trial 0: {log.resolve()} (last 3 lines)" in err.replace("\n", "")
    assert "Traceback (most recent call last)" in err  # the log's tail, not ours: exit 1 is not a crash
    assert res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.slow
def test_a_round_where_every_candidate_failed_exits_1(tmp_path, monkeypatch):
    fake = FailingRunner(fail={"A+B+C", "A+B+D"})
    res = _run(tmp_path, monkeypatch, fake, candidates=["C", "D"], max_size=3)
    assert res.exit_code == 1, res.output
    assert fake.calls == 3
    assert "study fails failed: round 1: every candidate failed" in res.stderr
    assert "2 x ExpertConfigError (trials 1, 2)" in res.stderr


@pytest.mark.slow
def test_a_study_with_some_failures_still_succeeds(tmp_path, monkeypatch):
    res = _run(tmp_path, monkeypatch, FailingRunner(fail={"A+B+C"}), candidates=["C", "D"], max_size=3)
    assert res.exit_code == 0, res.output
    assert "study fails failed" not in res.stderr


def test_the_error_line_of_a_log_names_the_cause_not_the_wrappers():
    lines = ["trainers.launch.TrialFailed: trial t failed (exit 1): see below",
             "[rank0]:     raise ExpertConfigError(",
             "[rank0]: experts.errors.ExpertConfigError: expert 'tiny-clip': size 50 is not a multiple of 16",
             "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: "]
    assert find_error(lines) == ("ExpertConfigError", "expert 'tiny-clip': size 50 is not a multiple of 16")
    assert find_error(["all good", "ChildFailedError: x"]) is None
