"""A whole study whose objective is an lmms-eval task (eval.harness lmms-eval): two real tiny trials
through `eagle-explore run`, then the leaderboard, the CSV export, the trials' MLflow runs and the
best trial's model export all carry the task's scores (lmms-eval's units) and intervals."""
import pytest

from tests.trainers.lmms_local_task import run_check

pytestmark = pytest.mark.slow
TASK = "eagle_tiny_gqa"


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    return run_check("lmms_study_check.py", tmp_path_factory.mktemp("lmms_study"))


def test_each_trial_is_scored_by_the_task(seen):
    assert seen["run"]["exit"] == 0, seen["run"]["output"]
    results = seen["results"]
    assert len(results) == 2
    for r in results.values():
        score = r["scores"][TASK]
        assert 0.0 <= score <= 1.0 and r["scores"][f"{TASK}/exact_match"] == score
        assert r["objective"] == score and r["objective_name"] == "avg"  # avg of one task: the task
        lo, hi = r["objective_ci"]
        assert lo <= score <= hi and r["scores_ci"][TASK] == [lo, hi]
        assert r["scorer_profile"] == "lmms-eval" and r["harness"]["tasks"] == [TASK]


def test_leaderboard_and_export_rank_by_the_task(seen):
    results = seen["results"]
    ranked = sorted(results.values(), key=lambda r: -r["objective"])
    board = seen["leaderboard"]["output"]
    assert seen["leaderboard"]["exit"] == 0 and "Avg" in board and "(tasks)" in board and "1000-pt" not in board
    cells = [f"{r['objective']:.4f}" for r in ranked]
    assert all(c in board for c in cells)
    if ranked[0]["objective"] != ranked[1]["objective"]:
        assert board.index(cells[0]) < board.index(cells[1])
    header, *rows = seen["csv"]["output"].strip().splitlines()
    cols = header.split(",")
    assert cols[cols.index(TASK) + 1:cols.index(TASK) + 3] == [f"{TASK} lo", f"{TASK} hi"] and "Avg (tasks)" in cols
    by_fusion = {r.split(",")[2]: r.split(",") for r in rows}
    for name, r in results.items():
        row = by_fusion[name.split("fusion=")[1].split("__")[0]]
        assert row[cols.index(TASK)] == f"{r['scores'][TASK]:.4f}"
        assert [row[cols.index(f"{TASK} lo")], row[cols.index(f"{TASK} hi")]] == [f"{v:.4f}" for v in r["scores_ci"][TASK]]


def test_mlflow_runs_hold_the_task_columns(seen):
    trial_runs = {r["tags"]["trial_dir"].rsplit("/", 1)[1]: r["metrics"] for r in seen["runs"] if "trial_dir" in r["tags"]}
    assert set(trial_runs) == set(seen["results"])
    for name, r in seen["results"].items():
        m = trial_runs[name]
        assert m[f"score/{TASK}"] == pytest.approx(r["scores"][TASK]) and m["avg"] == pytest.approx(r["objective"])
        assert [m[f"ci/score/{TASK}/lo"], m[f"ci/score/{TASK}/hi"]] == pytest.approx(r["scores_ci"][TASK])


def test_the_best_trial_exports_with_its_task_score(seen, tmp_path):
    best, exported = seen["best"], seen["exported"]
    assert exported["exit"] == 0, exported["output"]
    score = seen["results"][best]["scores"][TASK]
    assert f"| {TASK} | {score:.2f} |" in exported["card"] and "nan" not in exported["card"]
    assert "Study: lmms_study" in exported["card"]
    # the export answers the first question as the trial answered it inside lmms-eval
    assert exported["answer"].strip() == exported["trial_answer"]
