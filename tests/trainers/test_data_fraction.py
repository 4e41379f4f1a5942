"""data.fraction: pre-alignment and SFT on one fixed, seeded share of their records (the same for
every trial with the same seed), the held-out loss and the benchmarks on everything; plan counts
the share, and the stage-1 cache keeps the share's entries apart."""
from __future__ import annotations

import pytest

from tests.trainers.helpers_eagle import tiny_spec_dict, write_spec
from trainers.data.llava import take_fraction
from trainers.data.records import LlavaRecord
from trainers.estimate.cost import Assumptions, dataset_size
from trainers.launch import run_trial
from trainers.spec import SpecError, parse_trial_spec
from trainers.stages.recipes import resolve_data


def _records(n):
    return [LlavaRecord(id=str(i), image=None, conversations=[], where=f"line {i}") for i in range(n)]


def test_the_share_is_fixed_by_its_seed_and_keeps_file_order():
    recs = _records(100)
    a, b = take_fraction(recs, 0.25, 0), take_fraction(recs, 0.25, 0)
    ids = [r.id for r in a]
    assert len(a) == 25 and ids == [r.id for r in b] and ids == sorted(ids, key=int)
    assert ids != [r.id for r in take_fraction(recs, 0.25, 1)]
    assert take_fraction(recs, 1.0, 0) is recs and len(take_fraction(recs, 0.001, 0)) == 1


def test_bad_fractions_are_one_line():
    d = tiny_spec_dict()
    for bad in (0, 1.5):
        d["data"]["fraction"] = bad
        with pytest.raises(SpecError, match=r"^t.yaml: data.fraction: Input should be") as err:
            parse_trial_spec(d, "t.yaml")
        assert "\n" not in str(err.value)


def test_plan_and_cache_key_count_the_share(tmp_path):
    d = tiny_spec_dict()
    full = parse_trial_spec(d, "t.yaml")
    d["data"]["fraction"] = 0.5
    half = parse_trial_spec(d, "t.yaml")
    assert dataset_size(half, "sft", Assumptions())[0] == dataset_size(full, "sft", Assumptions())[0] // 2
    assert resolve_data(half, tmp_path).identity != resolve_data(full, tmp_path).identity


@pytest.mark.slow
def test_a_trial_on_half_the_data_trains_half_the_steps(tmp_path):
    d = tiny_spec_dict()  # 64 pretrain and 64 SFT records, global batch 8, one epoch: 8 steps a stage
    d["data"]["fraction"] = 0.5
    d["eval"] = {"benchmarks": []}
    result = run_trial(write_spec(d, tmp_path / "t.yaml"), tmp_path / "out", nproc=1)
    assert result["steps"]["sft"] == 4 and result["steps"]["align_projector"] == 4
    assert result["heldout_loss"] > 0
