"""run_eval on a real tiny EagleModel saved in a trial directory: 1 and 2 processes agree."""
import json

import pytest

from tests.trainers.helpers_eagle import tiny_model
from trainers.eval.cli import resolve_checkpoint, run_eval
from trainers.spec import dump_trial_spec, parse_trial_spec

pytestmark = pytest.mark.slow  # building and saving the tiny model takes ~10 s on 2 shared cores


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalcli")
    model = tiny_model(tmp)
    trial = tmp / "trial"
    model.save_pretrained(trial / "stages" / "sft" / "model")
    spec = parse_trial_spec({
        "experts": [{"preset": "tiny-clip"}, {"preset": "tiny-convnext"}],
        "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
        "data": {"synthetic": {"seed": 0, "image_size": 32, "n_eval": 4}},
        "eval": {"max_new_tokens": 4, "batch_size": 3}, "cache_dir": str(tmp / "cache")})
    dump_trial_spec(spec, trial / "trial.yaml")
    return trial


def test_resolve_checkpoint(trial, tmp_path):
    assert resolve_checkpoint(trial) == (trial / "stages/sft/model", trial / "trial.yaml")
    assert resolve_checkpoint(trial / "stages/sft/model")[1] == trial / "trial.yaml"
    with pytest.raises(FileNotFoundError, match="neither a trial directory"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")


def test_run_eval_real_tiny_model(trial, tmp_path):
    res = run_eval(trial, "gqa,pope,scienceqa_img", limit=3, out_dir=tmp_path / "one")
    assert res["objective_name"] == "avg" and set(res["scores"]) >= {"gqa", "pope", "scienceqa_img"}
    for name in ("gqa", "pope", "scienceqa_img"):
        assert 0.0 <= res["scores"][name] <= 100.0
        lines = [json.loads(l) for l in (tmp_path / "one/predictions" / f"{name}.jsonl").read_text().splitlines()]
        assert len(lines) == 3 and all(isinstance(l["answer"], str) for l in lines)
    assert json.loads((tmp_path / "one/eval_result.json").read_text()) == res
    assert res["scorer_profile"] == "official"  # the trial's
    lmms = run_eval(trial, "gqa", limit=3, out_dir=tmp_path / "lmms", profile="lmms_eval")
    assert lmms["scorer_profile"] == "lmms_eval"
    assert json.loads((tmp_path / "lmms/eval_result.json").read_text())["scorer_profile"] == "lmms_eval"
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        run_eval(trial, "gqa,nope")
    with pytest.raises(ValueError, match="--nproc must be a positive integer"):
        run_eval(trial, "gqa", nproc=0)


@pytest.mark.slow
def test_run_eval_two_processes_match_one(trial, tmp_path):
    one = run_eval(trial, "gqa,mme", limit=4, out_dir=tmp_path / "one")
    two = run_eval(trial, "gqa,mme", limit=4, out_dir=tmp_path / "two", nproc=2)
    assert two == one
    for name in ("gqa", "mme"):
        assert (tmp_path / "two/predictions" / f"{name}.jsonl").read_text() == \
            (tmp_path / "one/predictions" / f"{name}.jsonl").read_text()
