"""A trained tiny trial scored through lmms-eval (its evaluator, its task format, its scorer) as the
registered model `eagle_explorer`: on a local task built from the synthetic GQA items, it gives the
trial's own answers, and its exact-match score agrees with the project's GQA scorer. lmms-eval runs
under the `lmms` extra's interpreter (EAGLE_TEST_LMMS_PYTHON, which .ci/run builds), in
lmms_model_check.py."""
import json

import pytest

from tests.trainers.helpers_eagle import finished_trial
from tests.trainers.lmms_local_task import lmms_python, run_check

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    lmms_python()  # skips before the trial is built
    return finished_trial(tmp_path_factory.mktemp("lmms"))


def test_lmms_eval_scores_the_trial_with_its_own_answers(trial, tmp_path):
    out = run_check("lmms_model_check.py", "evaluator", trial, tmp_path)
    preds = out["predictions"]
    assert len(preds) == 6
    assert list(out["runs"]) == ["trial", "export"]  # a trial directory and its export are the same model
    for run in out["runs"].values():
        assert run["answers"] == [p["answer"] for p in preds]
        # exact match (case and punctuation ignored) is GQA's rule: the two scorers agree item by item
        assert run["exact_match"] == [p["score"] for p in preds]
        assert run["mean"] == pytest.approx(sum(p["score"] for p in preds) / len(preds))


def test_eval_harness_lmms_eval_writes_samples_and_names_what_is_missing(trial, tmp_path):
    out = run_check("lmms_model_check.py", "cli", trial, tmp_path)
    res = out["local"]
    assert res["exit_code"] == 0, res["output"] + res["exception"]
    assert "eagle_tiny_gqa/exact_match:" in res["output"]
    assert len(out["samples"].splitlines()) == 4 and json.loads(out["results"])["tasks"] == ["eagle_tiny_gqa"]

    res = out["unknown"]
    assert res["exit_code"] == 2 and "unknown lmms-eval task 'nope_task'" in res["output"]
    assert "Traceback" not in res["output"]
    res = out["hub"]
    assert res["exit_code"] == 2 and "dataset lmms-lab/not-cached-here is not in the Hugging Face cache" in res["output"]
