"""Pre-emption and trial-level resume: SIGTERM makes every rank checkpoint and stop with the
pre-emption code; running the trial again continues from that step and ends as an uninterrupted
run does; a directory continues only the spec it was started with."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainers.helpers_eagle import TINY_YAML, tiny_spec_dict, write_spec
from trainers.launch import prepare_trial, run_trial
from trainers.trial_dir import ATTEMPTS, PREEMPT_MARK, SPEC_STATE
from trainers.training.metrics import read_metrics
from trainers.training.preempt import PREEMPT_EXIT
from trainers.spec import SpecError

pytestmark = pytest.mark.slow


def _spec(tmp_path: Path, **sft) -> Path:
    d = tiny_spec_dict(checkpoint_every=100)  # the only mid-stage checkpoint is the pre-emption's
    d["train"]["stages"]["sft"].update(epochs=6, **sft)  # 48 SFT steps
    return write_spec(d, tmp_path / f"t{len(sft)}.yaml")


def _losses(out: Path, stage: str) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(out / "metrics.jsonl") if m["stage"] == stage}


def _wait_for_sft_step(out: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and max(_losses(out, "sft"), default=0) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"SFT never reached step {step} (exit {proc.poll()})")


def test_sigterm_checkpoints_every_rank_and_the_next_attempt_continues(tmp_path):
    spec = _spec(tmp_path)
    reference = run_trial(spec, tmp_path / "ref" / "trial", nproc=2)  # its own stage-1 cache

    out = tmp_path / "pre" / "trial"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TINY_YAML.parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "trainers.launch", str(spec), "--out", str(out), "--nproc", "2"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_sft_step(out, proc, 3)
    os.kill(proc.pid, signal.SIGTERM)  # the launcher only: it asks every rank to stop
    assert proc.wait(timeout=120) == PREEMPT_EXIT
    mark = json.loads((out / PREEMPT_MARK).read_text())
    stopped = mark["step"]
    assert mark["stage"] == "sft" and 3 <= stopped < 48
    assert (out / "checkpoints" / "sft" / f"step_{stopped:07d}" / "COMPLETE").is_file()
    assert not (out / "result.json").exists()
    assert json.loads((out / ATTEMPTS).read_text())[-1]["exit"] == "preempted"

    changed = _spec(tmp_path, lr=5e-4)  # another spec may not continue this directory's progress
    with pytest.raises(SpecError) as err:
        prepare_trial(changed, out, 2)
    line = str(err.value)
    assert "\n" not in line and "train.stages.sft.lr (0.001 -> 0.0005)" in line and "--restart" in line

    result = run_trial(spec, out, nproc=2)  # the same command again
    attempts = result["attempts"]
    assert [a["exit"] for a in attempts] == ["preempted", 0]
    assert attempts[1]["resumed_from"]["sft"] == stopped
    assert attempts[1]["resumed_from"]["align_projector"] == reference["steps"]["align_projector"]
    assert result["steps"] == reference["steps"]
    sft, ref_sft = _losses(out, "sft"), _losses(tmp_path / "ref" / "trial", "sft")
    assert sorted(sft) == list(range(1, 49))  # no step lost or logged twice
    assert sft == pytest.approx(ref_sft, rel=1e-4)
    assert result["heldout_loss"] == pytest.approx(reference["heldout_loss"], rel=1e-4)

    prepare_trial(changed, out, 2, restart=True)  # a clean restart moves the old progress aside
    (aside,) = (out / ".superseded").iterdir()
    assert (aside / "stages" / "sft" / "done.json").is_file() and not (out / "stages").exists()
    assert json.loads((out / SPEC_STATE).read_text())["spec"]["train"]["stages"]["sft"]["lr"] == 5e-4
