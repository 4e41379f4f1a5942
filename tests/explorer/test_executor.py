"""The LocalRunner: a trial as its own process tree, eval lines streamed for pruning, failures
classified; and one real tiny trial through the controller (slow)."""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from explorer.backends.local import LocalExecutor, LocalRunner

from explorer.backends.base import RunnerError, TrialJob, run_job
# Stands in for `python -m explorer.backends.local SPEC OUT NPROC`: writes eval lines and result.json
# like a trial, and (mode "slow") leaves a grandchild in its own session, as torchrun does.
FAKE = r'''#!{python}
import json, os, subprocess, sys, time
spec, out, nproc = sys.argv[3], sys.argv[sys.argv.index('--out') + 1], sys.argv[sys.argv.index('--nproc') + 1]
mode = os.environ["FAKE_MODE"]
if mode == "slow":  # the grandchild exists before any eval line, so a prune must reach it
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    open(os.path.join(out, "grandchild.pid"), "w").write(str(child.pid))
with open(os.path.join(out, "metrics.jsonl"), "a") as fh:
    fh.write(json.dumps({{"step": 1, "stage": "sft", "loss": 2.0}}) + "\n")
    for step, v in ((10, 50.0), (20, 60.0)):
        fh.write(json.dumps({{"stage": "eval", "step": step, "avg": v}}) + "\n")
        fh.flush()
if mode == "fail":
    sys.stderr.write("RuntimeError: rank 0 ran out of memory\n")
    sys.exit(3)
if mode == "slow":
    time.sleep(60)
if mode == "ok":
    json.dump({{"objective": 61.5, "scores": {{"gqa": 61.5}}}}, open(os.path.join(out, "result.json"), "w"))
'''


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake_python"
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _job(tmp_path, report=lambda step, value: False):
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir(parents=True, exist_ok=True)
    spec = trial_dir / "trial.yaml"
    spec.write_text("name: x\n")
    return TrialJob(number=0, trial_dir=trial_dir, spec_path=spec, params={}, user_attrs={}, report=report)


def test_result_and_eval_stream(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "ok")
    reported = []
    job = _job(tmp_path, lambda step, value: reported.append((step, value)) or False)
    outcome = run_job(LocalRunner(python=fake_python, poll_s=0.05), job)
    assert outcome.state == "complete" and outcome.value == 61.5 and outcome.result["scores"] == {"gqa": 61.5}
    assert reported == [(10, 50.0), (20, 60.0)]  # eval lines only, in order, once each


def test_non_zero_exit_is_a_failure_with_the_log_tail(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail")
    with pytest.raises(RunnerError, match="exited with 3 .*rank 0 ran out of memory"):
        LocalRunner(python=fake_python, poll_s=0.05)(_job(tmp_path))
    monkeypatch.setenv("FAKE_MODE", "noresult")
    with pytest.raises(RunnerError, match="wrote no .*result.json"):
        LocalRunner(python=fake_python, poll_s=0.05)(_job(tmp_path / "again"))


def test_pruning_kills_the_whole_process_tree(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "slow")
    job = _job(tmp_path, lambda step, value: step >= 20)
    t0 = time.monotonic()
    with pytest.raises(optuna.TrialPruned):
        LocalRunner(python=fake_python, poll_s=0.05, kill_grace_s=2.0)(job)
    assert time.monotonic() - t0 < 30
    pid = int((job.trial_dir / "grandchild.pid").read_text())
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # killed and reaped, though in its own session
        os.kill(pid, 0)


def test_local_executor_runs_jobs_concurrently(tmp_path):
    def runner(job):
        time.sleep(0.3)
        return {"objective": job.number}

    ex = LocalExecutor(runner, max_concurrent=3)
    t0 = time.monotonic()
    futs = [ex.submit(TrialJob(i, tmp_path, tmp_path / "t.yaml", {}, {})) for i in range(3)]
    assert [f.result().value for f in futs] == [0, 1, 2]
    assert time.monotonic() - t0 < 0.85
    ex.shutdown()


@pytest.mark.slow
def test_a_real_tiny_trial_through_the_controller(tmp_path):
    try:
        import trainers.launch  # noqa: F401
    except ImportError as err:
        pytest.skip(f"trainers.launch is not importable yet: {err}")
    from explorer.controller import run_study
    from explorer.study.storage import default_storage_url
    from explorer.study.load import parse_study
    root = Path(__file__).resolve().parents[2]
    base = yaml.safe_load((root / "studies" / "trials" / "tiny.yaml").read_text())
    for stage in base["train"]["stages"].values():
        stage["max_steps"] = 2
    base["data"]["synthetic"].update(n_pretrain=16, n_sft=16, n_heldout=8)
    data = {"name": "real", "strategy": {"type": "grid", "experts": ["A", "B"], "axes": {"fusion": ["channel_concat"]}},
            "search_space": "eagle_tiny", "base_trial": base, "objective": {"metric": "heldout_loss", "direction": "minimize"},
            "poll_interval_s": 0.2}
    spec = parse_study(data, "real.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path)
    (trial_dir,) = (tmp_path / "trials" / "real").iterdir()
    assert outcome.finished and outcome.n_complete == 1, (trial_dir / "logs").glob("*")
    result = json.loads((trial_dir / "result.json").read_text())
    assert outcome.best_value == pytest.approx(result["objective"])
    assert (trial_dir / "metrics.jsonl").is_file() and (tmp_path / "cache").is_dir()


@pytest.mark.slow
def test_a_real_trial_is_pruned_from_its_interval_evaluations(tmp_path):
    """Real trials report eval lines during SFT (eval.interval_steps); the pruner stops one early."""
    from explorer.controller import run_study
    from explorer.study.storage import default_storage_url
    from explorer.study.load import parse_study
    from optuna.trial import TrialState

    root = Path(__file__).resolve().parents[2]
    base = yaml.safe_load((root / "studies" / "trials" / "tiny.yaml").read_text())
    for stage in base["train"]["stages"].values():
        stage["max_steps"] = 2
    base["train"]["stages"]["sft"].update(epochs=100, max_steps=200)  # 200 steps unless stopped
    base["data"]["synthetic"].update(n_pretrain=16, n_sft=16, n_heldout=8, n_eval=4)
    base["eval"] = {"benchmarks": ["gqa"], "limit": 4, "batch_size": 4, "max_new_tokens": 2, "interval_steps": 2}
    data = {"name": "pruned", "strategy": {"type": "grid", "experts": ["A", "B"], "axes": {"fusion": ["channel_concat"]}},
            "search_space": "eagle_tiny", "base_trial": base, "objective": {"metric": "avg", "direction": "maximize"},
            "pruner": {"type": "threshold", "options": {"lower": 1001.0}},  # Avg is at most 1000: always pruned
            "poll_interval_s": 0.2}
    spec = parse_study(data, "pruned.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path)
    (trial_dir,) = (tmp_path / "trials" / "pruned").iterdir()
    assert outcome.finished
    study = optuna.load_study(study_name="pruned", storage=default_storage_url(tmp_path))
    (trial,) = study.get_trials()
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [2]
    sft_steps = [json.loads(l)["step"] for l in (trial_dir / "metrics.jsonl").read_text().splitlines()
                 if json.loads(l)["stage"] == "sft"]
    assert sft_steps and max(sft_steps) < 200  # stopped long before the end of SFT
    assert not (trial_dir / "result.json").exists()
