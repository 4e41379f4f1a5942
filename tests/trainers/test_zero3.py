"""ZeRO-3 on 2 gloo processes through benchmarks.zero3_check, the job benchmarks.gpu_check runs on
GPUs: fresh (stage 1, stage 2, baseline), loaded and stage-1-cached models are built partitioned,
no parameter whole on any rank, their gathered weights exactly a whole build's (pretrained experts
and LLM read from local directories included); evaluation on the live partitions, with the ranks
holding different item counts, gives the loss, predictions and scores of the same weights whole
(as DDP evaluates them), never gathers in place, and does not hang (a hang is a failure after 300 s)."""
from __future__ import annotations

import pytest

from benchmarks import zero3_check
from benchmarks.gpu_check import run_zero3_check

pytestmark = pytest.mark.slow


def test_zero3_builds_partitioned_and_evaluates_on_the_partitions(tmp_path):
    doc = run_zero3_check(2, tmp_path)
    assert doc["ok"], doc["problems"]
    assert (doc["world_size"], doc["device"], doc["precision"]) == (2, "cpu", "fp32")
    assert set(zero3_check.BENCHES) <= set(doc["scores"]) and doc["loss"] > 0
