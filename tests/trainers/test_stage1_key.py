"""The stage-1 cache key, computed the way a trial computes it (TrialRunner.stage1_key), changes
with every field that changes a stage-1 result and stays put for SFT-only settings."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trainers.spec import parse_trial_spec

TEXTS = {"pretrain": "a red circle on a white background", "sft": "what colour is the shape ?"}


def _records(text: str) -> list[dict]:
    return [{"id": "0", "image": "0.png", "conversations": [{"from": "human", "value": "<image>\nsay"},
                                                            {"from": "gpt", "value": text}]}]


def _spec(tmp: Path) -> dict:
    for split, text in TEXTS.items():
        p = tmp / f"{split}.json"
        if not p.exists():
            p.write_text(json.dumps(_records(text)))
    (tmp / "images").mkdir(exist_ok=True)
    return {"experts": [{"preset": "tiny-clip"}, {"preset": "tiny-convnext"}],
            "llm": {"preset": "tiny-llama"},
            "data": {"pretrain": str(tmp / "pretrain.json"), "sft": str(tmp / "sft.json"),
                     "image_folder": str(tmp / "images")},
            "train": {"precision": "fp32"}}


def _key(tmp: Path, d: dict, name: str = "t") -> str:
    from trainers.stages import recipes as S
    from trainers.training.distributed import DistEnv
    from trainers.stages.runner import TrialRunner

    spec = parse_trial_spec(d, name)
    out = tmp / f"out_{name}"
    out.mkdir(exist_ok=True)
    (out / "data_checks.json").write_text("{}")  # the launcher's image checks: no dataset is read here
    runner = TrialRunner(spec, out, DistEnv(), tmp / "cache")
    return runner.stage1_key(S.resolve_experts(spec)[0])


def test_every_field_that_changes_stage1_changes_the_key(tmp_path):
    base = _key(tmp_path, _spec(tmp_path), "base")
    assert _key(tmp_path, _spec(tmp_path), "again") == base
    other = tmp_path / "other_images"
    other.mkdir()
    changes = {
        "precision": lambda d: d["train"].update(precision="bf16"),
        "image size the data is prepared at": lambda d: d["experts"][1].update(input_size=160),
        "image folder": lambda d: d["data"].update(image_folder=str(other)),
        "expert grad checkpointing": lambda d: d["experts"][0].update(grad_checkpointing=True),
        "expert input size": lambda d: d["experts"][0].update(input_size=96),
        "seed": lambda d: d.update(seed=1),
    }
    keys = {}
    for what, change in changes.items():
        d = _spec(tmp_path)
        change(d)
        keys[what] = _key(tmp_path, d, what.replace(" ", "_"))
    same = [w for w, k in keys.items() if k == base]
    assert same == [], f"the key ignores: {same}"
    assert len(set(keys.values())) == len(keys)


def test_sft_only_settings_share_the_key(tmp_path):
    base = _key(tmp_path, _spec(tmp_path), "base")
    d = _spec(tmp_path)
    d["experts"][0]["freeze"] = False
    d["llm"]["freeze"] = True
    assert _key(tmp_path, d, "sft_only") == base


def test_vocabulary_texts_of_a_preset_llm_change_the_key(tmp_path):
    """The SFT file is not stage-1 data, but a preset LLM's vocabulary is built from it."""
    base = _key(tmp_path, _spec(tmp_path), "base")
    (tmp_path / "sft.json").write_text(json.dumps(_records("how many squares are there ?")))
    assert _key(tmp_path, _spec(tmp_path), "vocab") != base


def test_the_stage1_code_changes_the_key(tmp_path, monkeypatch):
    from trainers.caches import stage1 as cache
    base = _key(tmp_path, _spec(tmp_path), "base")
    copy = tmp_path / "src"
    for part in cache.STAGE1_CODE:
        src = cache.ROOT / part
        dst = copy / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    monkeypatch.setattr(cache, "ROOT", copy)
    assert _key(tmp_path, _spec(tmp_path), "copy") == base  # same code, same key
    engine = copy / "trainers" / "training" / "loop.py"
    engine.write_text(engine.read_text() + "\n# a change to the training loop\n")
    assert _key(tmp_path, _spec(tmp_path), "edited") != base


@pytest.mark.parametrize("part", ["trainers/training", "trainers/stages/pre_align.py", "experts", "trainers/data"])
def test_stage1_code_list_names_real_code(part):
    from trainers.caches import stage1 as cache
    assert part in cache.STAGE1_CODE and (cache.ROOT / part).exists()
