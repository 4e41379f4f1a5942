"""The paper-scale studies run the paper's recipe: SFT trains the experts (stage 3: everything
trainable), full-size experts and the LLM checkpoint activations, the run is bf16."""
from __future__ import annotations

from pathlib import Path

import pytest

from explorer.study.trial_specs import build_trial_data
from explorer.study.load import load_study
from trainers.spec import parse_trial_spec
from trainers.stages.recipes import resolve_experts

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("study_file, letters", [("eagle_greedy.yaml", "ABCDEF"), ("eagle_fusion.yaml", "AB")])
def test_paper_studies_train_experts_in_sft(study_file, letters, tmp_path):
    study = load_study(ROOT / "studies" / study_file)
    params = {f"expert_{x}": True for x in letters}
    data = build_trial_data(study, params, {"experts": "+".join(letters)}, number=0, cache_dir=tmp_path)
    spec = parse_trial_spec(data, study_file)
    cfgs = resolve_experts(spec)
    assert len(cfgs) == len(letters)
    assert [c.freeze for c in cfgs] == [False] * len(letters)  # trained in SFT
    assert all(c.grad_checkpointing for c in cfgs) and spec.llm.checkpointing
    assert spec.train.precision == "bf16" and spec.llm.freeze is False
