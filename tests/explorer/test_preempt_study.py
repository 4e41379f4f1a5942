"""SIGTERM to `eagle-explore run` during a real trial's SFT: the trial checkpoints, the controller
exits 130, and the same command continues the trial from that step (nothing redone but the
step in flight)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _sft_steps(trial_dir: Path) -> list[int]:
    path = trial_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]
    return [m["step"] for m in lines if m.get("stage") == "sft"]


def test_sigterm_to_the_controller_checkpoints_its_trial_and_run_continues_it(tmp_path):
    base = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    for stage in base["train"]["stages"].values():
        stage.update(max_steps=2)
    base["train"]["stages"]["sft"].update(epochs=100, max_steps=60)
    base["train"]["checkpoint_every"] = 1000
    base["data"]["synthetic"].update(n_pretrain=16, n_sft=16, n_heldout=8)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "pre", "strategy": {"type": "grid", "experts": ["A"], "axes": {"fusion": ["channel_concat"]}},
        "search_space": "eagle_tiny", "base_trial": base, "poll_interval_s": 0.2,
        "objective": {"metric": "heldout_loss", "direction": "minimize"}}))
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "explorer.cli.main", "run", str(study), "--workdir", str(work)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trials_dir = work / "trials" / "pre"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        dirs = list(trials_dir.glob("*")) if trials_dir.is_dir() else []
        if dirs and max(_sft_steps(dirs[0]), default=0) >= 3:
            break
        time.sleep(0.1)
    (trial_dir,) = list(trials_dir.glob("*"))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    stopped = json.loads((trial_dir / "preempted.json").read_text())["step"]
    assert stopped >= 3 and (trial_dir / "checkpoints" / "sft" / f"step_{stopped:07d}" / "COMPLETE").is_file()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads((trial_dir / "result.json").read_text())
    assert [a["exit"] for a in result["attempts"]] == ["preempted", 0]
    assert result["attempts"][1]["resumed_from"]["sft"] == stopped
    assert sorted(_sft_steps(trial_dir)) == list(range(1, 61))  # every step once
    trials = optuna.load_study(study_name="pre", storage=f"sqlite:///{work / 'study.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs.get("interrupted") and "error" not in trials[0].user_attrs
