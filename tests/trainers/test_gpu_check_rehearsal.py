"""`python -m benchmarks.gpu_check --rehearse-on-cpu`: the GPU check's own path on this machine (gloo,
2 processes, fp32, tiny sizes): the tiny trial under ddp, ZeRO-2 and ZeRO-3 with falling losses and
a complete result.json; ZeRO-3's partitioned build and evaluation on the live partitions equal to the
whole model's (benchmarks.zero3_check: no parameter whole on any rank, no hang within 300 s); the
memory estimate against measured peaks; the full-size loop at tiny size; its JSON line in $OUT."""
from __future__ import annotations

import json

import pytest

from benchmarks import gpu_check, zero3_check

pytestmark = pytest.mark.slow


def test_the_gpu_check_runs_end_to_end_on_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    rc = gpu_check.main(["--rehearse-on-cpu"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    doc = json.loads(line)
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == doc
    assert rc == 0 and doc["ok"], {k: v.get("problems") for k, v in [*doc["tiny_trials"].items(), *doc["zero3"].items()]}
    assert doc["rehearsal"] and doc["device"] == "cpu"
    assert set(doc["tiny_trials"]) == {f"{s}/2cpu" for s in gpu_check.STRATEGIES}
    z3 = doc["zero3"]["2cpu"]
    assert (z3["world_size"], z3["device"], z3["precision"]) == (2, "cpu", "fp32")
    assert set(zero3_check.BENCHES) <= set(z3["scores"]) and z3["loss"] > 0
    assert doc["memory_check"] and doc["full_size"]
