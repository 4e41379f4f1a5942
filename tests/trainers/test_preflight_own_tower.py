"""A user's own vision tower: an hf_vision expert declared with a local `source` directory and no
`arch` takes its architecture from the directory's config.json at pre-flight (docs/experts.md);
a source with no config is one line naming the expert."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainers.preflight import check_trial
from trainers.spec import SpecError, parse_trial_spec

ROOT = Path(__file__).resolve().parents[2]


def _tower(out: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                       patch_size=14, image_size=56)
    Dinov2Model(cfg).save_pretrained(out)
    return out


def _spec(source: str) -> dict:
    spec = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    spec["experts"] = [{"preset": "my-tower", "define": {"family": "hf_vision", "source": source, "native_size": 56,
                                                         "input_size": 56, "hidden_size": 48, "grid": 4}},
                       {"preset": "tiny-dinov2"}]
    return spec


def test_an_hf_vision_source_without_arch_passes_preflight(tmp_path):
    src = _tower(tmp_path / "my_tower")
    check_trial(parse_trial_spec(_spec(str(src)), "t.yaml"), "t.yaml")


def test_a_source_without_a_config_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError) as err:
        check_trial(parse_trial_spec(_spec(str(tmp_path / "empty")), "t.yaml"), "t.yaml")
    msg = str(err.value)
    assert "\n" not in msg and "experts.0" in msg and "my-tower" in msg and "cannot read a config" in msg, msg
