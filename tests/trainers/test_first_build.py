"""Parts with no weights on disk yet under ZeRO-3 (trainers/modeling/first_build.py): rank 0 alone
builds each (experts' random init, the fusion, a preset LLM) and every rank reads its range from
rank 0's copy; the model equals a plain build of the same seed and the copy is gone afterwards."""
from __future__ import annotations

import json

from tests.trainers.helpers_eagle import run_workers


def test_rank0_builds_each_new_part_once_and_the_model_equals_a_plain_build(tmp_path):
    out = tmp_path / "ranks.json"
    run_workers("first_build_worker.py", str(tmp_path), str(out))
    r0, r1 = json.loads(out.read_text())
    assert r0["built"] == ["build_expert", "build_expert", "build_llm"]
    assert r1["built"] == []  # rank 1 never held an expert or the LLM whole
    assert r0["partitioned"] and r1["partitioned"]
    assert r0["same_keys"] and r0["differ"] == []
    assert not r0["scratch_left"]
