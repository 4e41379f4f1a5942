"""eval.harness lmms-eval: a trial's final evaluation on lmms-eval's tasks (under the `lmms` extra's
interpreter, EAGLE_TEST_LMMS_PYTHON, which .ci/run builds), and the pre-flight's one-line errors."""
import sys

import pytest

from tests.trainers.lmms_local_task import run_check
from trainers.preflight import check_eval_spec
from trainers.spec import EvalSpec, SpecError


@pytest.mark.slow
def test_a_trial_is_scored_by_lmms_eval_tasks_with_items_and_intervals(tmp_path):
    out = run_check("lmms_objective_check.py", tmp_path)
    ev, preds = out["result"], out["predictions"]
    assert len(preds) == 6 and [p["question_id"] for p in preds] == [str(i) for i in range(6)]
    mean = sum(p["score"] for p in preds) / 6  # the headline is lmms-eval's exact_match mean over the items
    assert ev["scores"]["eagle_tiny_gqa"] == pytest.approx(mean)
    assert ev["scores"]["eagle_tiny_gqa/exact_match"] == pytest.approx(mean)
    assert ev["objective"] == pytest.approx(mean) and ev["scorer_profile"] == "lmms-eval"
    lo, hi = ev["scores_ci"]["eagle_tiny_gqa"]
    assert lo <= mean <= hi and ev["objective_ci"] is not None


def _error(**fields) -> str:
    with pytest.raises(SpecError) as err:
        check_eval_spec(EvalSpec(**fields), "t.yaml")
    return str(err.value)


def test_lmms_eval_harness_errors_are_one_line():
    assert _error(tasks=["gqa"]) == "t.yaml: eval.tasks: lmms-eval tasks need eval.harness: lmms-eval"
    assert "eval.tasks: harness lmms-eval needs at least one lmms-eval task" in _error(harness="lmms-eval")
    assert "leave eval.benchmarks empty" in _error(harness="lmms-eval", tasks=["gqa"], benchmarks=["gqa"])
    assert "eval.blind: the blind control" in _error(harness="lmms-eval", tasks=["gqa"], blind=True)
    if "lmms_eval" not in sys.modules:
        try:
            import lmms_eval  # noqa: F401
        except ImportError:
            assert _error(harness="lmms-eval", tasks=["gqa"]) == (
                "t.yaml: eval.tasks: lmms-eval 0.7.x is not installed (the lmms extra): pip install -e '.[lmms]'")


def test_eval_command_without_the_extra_is_one_line(tmp_path):
    import importlib.util

    from typer.testing import CliRunner

    from explorer.cli.main import app
    from tests.trainers.helpers_eagle import finished_trial

    if importlib.util.find_spec("lmms_eval") is not None:
        pytest.skip("lmms-eval is installed in this environment")
    res = CliRunner().invoke(app, ["eval", str(finished_trial(tmp_path)), "--harness", "lmms-eval", "--tasks", "gqa"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: lmms-eval 0.7.x is not installed (the lmms extra): pip install -e '.[lmms]'"
    assert not (tmp_path / "trials" / "tiny_greedy_v2" / "r1__A+B__s0" / "eval").exists()  # nothing written
