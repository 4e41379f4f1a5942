"""The scorer profile travels from the trial spec (eval.scorer_profile) to the harnesses, and the
evaluation result names it (tests/explorer/test_cli_scorer_profile.py: from a study, from
`eval --profile`)."""
import json

import pytest

from trainers.eval.runner import evaluate
from trainers.spec import SpecError, parse_trial_spec

TRIAL = {"experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
         "data": {"synthetic": {"seed": 1, "image_size": 32, "n_eval": 4}}}


class YesModel:
    """Answers every yes/no question "Yes, there is.": right for POPE's parsing on a "yes" item,
    never exactly "yes" as lmms-eval wants."""

    training = False

    def generate(self, images, prompts, max_new_tokens):
        return ["Yes, there is." for _ in prompts]


def _trial(tmp_path, **eval_over):
    return parse_trial_spec({**TRIAL, "eval": {"benchmarks": ["pope"], "batch_size": 8, **eval_over},
                             "cache_dir": str(tmp_path / "cache")})


def test_spec_field_default_and_error():
    assert parse_trial_spec(TRIAL).eval.scorer_profile == "official"
    with pytest.raises(SpecError, match="t.yaml: eval.scorer_profile: Input should be 'official' or 'lmms_eval'"):
        parse_trial_spec({**TRIAL, "eval": {"scorer_profile": "lmms"}}, "t.yaml")


def test_evaluate_scores_by_the_profile_and_names_it(tmp_path):
    official = evaluate(YesModel(), None, _trial(tmp_path), tmp_path / "a")
    lmms = evaluate(YesModel(), None, _trial(tmp_path, scorer_profile="lmms_eval"), tmp_path / "b")
    assert official["scorer_profile"] == "official" and lmms["scorer_profile"] == "lmms_eval"
    lines = [json.loads(x) for x in (tmp_path / "a/predictions/pope.jsonl").read_text().splitlines()]
    yes_share = sum(x["ground_truth"] == "yes" for x in lines) / len(lines)
    assert 0 < yes_share < 1
    # official: every answer parses as yes, so accuracy = the share of yes items; lmms-eval: none is exact
    assert official["scores"]["pope/random/accuracy"] == pytest.approx(
        100 * sum(x["score"] for x in lines if x["question_id"].startswith("random/")) / 4)
    assert [x["score"] for x in lines] == [float(x["ground_truth"] == "yes") for x in lines]
    assert all(json.loads(x)["score"] == 0.0 for x in (tmp_path / "b/predictions/pope.jsonl").read_text().splitlines())
    assert lmms["scores"]["pope"] == 0.0 < official["scores"]["pope"]
