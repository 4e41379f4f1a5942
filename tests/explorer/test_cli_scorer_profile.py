"""A study's base trial chooses the scorer profile of its trials; `eagle-explore eval --profile`
overrides the trial's (checked before anything loads)."""
import pytest
from typer.testing import CliRunner

from explorer.cli.main import app
from explorer.study.trial_specs import build_trial_spec
from explorer.strategies import build_strategy
from explorer.study.spec import StudyError
from explorer.study.load import parse_study
from trainers.eval.cli import eval_spec
from trainers.spec import dump_trial_spec, parse_trial_spec

TRIAL = {"experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
         "data": {"synthetic": {"seed": 1, "image_size": 32, "n_eval": 4}}}


def test_eval_command_overrides_the_trials_profile(tmp_path):
    dump_trial_spec(parse_trial_spec({**TRIAL, "eval": {"benchmarks": ["gqa"]}}), tmp_path / "trial.yaml")
    assert eval_spec(tmp_path / "trial.yaml", "gqa", None, None).eval.scorer_profile == "official"
    assert eval_spec(tmp_path / "trial.yaml", "gqa", None, None, "lmms_eval").eval.scorer_profile == "lmms_eval"
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--benchmarks", "gqa", "--profile", "vlmevalkit"])
    assert result.exit_code != 0
    assert "--profile: unknown scorer profile 'vlmevalkit'; known: official, lmms_eval" in result.output


def test_a_study_chooses_the_profile_for_its_trials(tmp_path):
    study = {"name": "s", "strategy": {"type": "greedy", "base": ["A"], "max_size": 2}, "search_space": "eagle_tiny",
             "base_trial": {**TRIAL, "eval": {"benchmarks": ["gqa"], "scorer_profile": "lmms_eval"}}}
    spec = parse_study(study, "s.yaml", tmp_path)
    params, attrs = build_strategy(spec).sample_point()
    assert build_trial_spec(spec, params, attrs).eval.scorer_profile == "lmms_eval"
    study["base_trial"]["eval"]["scorer_profile"] = "lmms"
    with pytest.raises(StudyError, match="s.yaml: base_trial: .*eval.scorer_profile: Input should be"):
        parse_study(study, "s.yaml", tmp_path)
