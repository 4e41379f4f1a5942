"""A study as its users see it, read back through the clients the UIs use: MLflow's (the runs
table, compare views, the parent run's report) and Optuna's (optuna-dashboard); and a work
directory that moved. The real controller runs scripted trials with the paper's figures."""
import io
import json
import shutil

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from test_report_support import TINY_BASE, PaperRunner
from typer.testing import CliRunner

from explorer.cli.main import app
from explorer.cli.views import study_url
from explorer.controller import run_study
from explorer.study.load import load_study
from explorer.tracking.tracker import MlflowTracker, default_artifact_root, default_tracking_uri

pytestmark = pytest.mark.slow  # 11 scripted trials through the controller, MLflow and the plots

NAME = "views"
STUDY = {"name": NAME, "strategy": {"type": "greedy", "base": ["A", "B"], "max_size": 6},
         "search_space": "eagle_tiny", "base_trial": TINY_BASE, "heartbeat_interval_s": 1,
         "grace_period_s": 3, "poll_interval_s": 0.05}
PLOTS = ("greedy_path.png", "pareto.png", "benchmarks.png")


def _run(work, spec, **budget):
    spec = spec.model_copy(update={"budget": spec.budget.model_copy(update=budget)})
    tracker = MlflowTracker(default_tracking_uri(work), NAME, artifact_root=default_artifact_root(work), spec=spec,
                            workdir=work, report_interval_s=float("inf"))
    outcome = run_study(spec, f"sqlite:///{work / 'study.db'}", work, tracker=tracker, runner=PaperRunner())
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{work / 'study.db'}")
    tracker.on_study_end(study, status="FINISHED" if outcome.finished else "KILLED")
    return study


def _plots(client, run_id, dest):
    out = {}
    for name in PLOTS:
        path = client.download_artifacts(run_id, f"report/{name}", str(dest))
        out[name] = open(path, "rb").read()
    return out


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    work = tmp_path_factory.mktemp("views")
    (work / "study.yaml").write_text(yaml.safe_dump(STUDY))
    spec = load_study(work / "study.yaml")
    first = _run(work, spec, max_trials=5)  # stops at the budget, mid round 1
    client = MlflowClient(default_tracking_uri(work))
    parent = first.user_attrs["mlflow_parent_run_id"]
    early = _plots(client, parent, work / "dl-early")
    study = _run(work, spec)  # resumed to the end
    return {"work": work, "study": study, "client": client, "parent": parent, "early": early,
            "late": _plots(client, parent, work / "dl-late")}


def _children(v):
    exp = v["client"].get_experiment_by_name(NAME)
    return exp, v["client"].search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{v['parent']}'")


def test_experiment_opens_on_runs_named_by_mixture_and_round(views):
    exp, children = _children(views)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # the view `eagle-explore ui` links to: objective first and sorted on, scores, the varying settings
    view = json.loads(exp.tags["mlflow.sharedViewState.eagle"])
    assert view["orderByKey"] == "metrics.`avg`" and view["orderByAsc"] is False and view["runsHiddenMode"] == "SHOW_ALL"
    cols = view["selectedColumns"]
    assert cols[0] == "metrics.`avg`" and "metrics.`score/ocrbench`" in cols
    assert {"params.`experts`", "params.`round`", "params.`candidate`", "params.`expert.F`"} <= set(cols)
    assert len(children) == 11
    names = {r.info.run_name for r in children}
    assert "A+B · r0 · #0" in names and "A+B+F+E+C · r3 · #8" in names


def test_one_objective_metric_scores_under_one_prefix_no_duplicates(views):
    _, children = _children(views)
    run = next(r for r in children if r.data.params["experts"] == "A+B+F")
    m = run.data.metrics
    assert m["avg"] == pytest.approx(665.3) and m["score/ocrbench"] == pytest.approx(562)
    assert not [k for k in m if k.startswith(("eval/", "system/")) or k in ("objective", "best_value")]
    assert sorted(k for k in m if k.startswith("score/")) == sorted(
        f"score/{b}" for b in ("gqa", "mme", "mmmu", "ocrbench", "scienceqa_img", "pope", "textvqa"))
    assert m["peak_memory_mb"] == 321.0 and m["stage_time_s/sft"] == 4.0 and m["throughput/sft/samples_per_s"] == 12.0
    history = views["client"].get_metric_history(run.info.run_id, "sft/loss")
    assert [h.step for h in history] == [0, 1, 2, 3, 4] and history[0].value > history[-1].value
    assert [h.step for h in views["client"].get_metric_history(run.info.run_id, "avg")] == [5]


def test_compare_views_have_the_varying_settings_as_params(views):
    _, children = _children(views)
    run = next(r for r in children if r.data.params["experts"] == "A+B+F")
    p = run.data.params
    assert (p["round"], p["candidate"], p["n_experts"], p["seed"]) == ("1", "F", "3", "0")
    assert p["expert.F"] == "true" and p["expert.C"] == "false" and "expert.A" not in p  # A, B: in every trial
    assert p["visual_tokens"] == "16" and p["world_size"] == "2"
    assert [p[f"spec.expert.{x}.preset"] for x in "ABF"] == ["tiny-clip", "tiny-convnext", "tiny-eva02"]
    assert "None" not in p.values() and not [k for k in p if k.startswith(("optuna.", "spec.experts."))]
    assert run.data.tags["trial_dir"] == f"trials/{NAME}/r1__A+B+F__s0"  # relative, the planned trial's own
    files = {a.path for a in views["client"].list_artifacts(run.info.run_id)}
    assert {"trial.yaml", "result.json", "metrics.jsonl", "predictions", "logs"} <= files


def test_parent_run_is_the_study_report(views):
    client, parent = views["client"], views["parent"]
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["best_experts"] == "A+B+F+E+C"
    assert run.data.metrics["avg"] == pytest.approx(666.5) and run.data.metrics["score/mme"] == 1511
    assert run.data.params["strategy.type"] == "greedy" and run.data.params["objective.metric"] == "avg"
    assert run.data.params["base_trial.llm.preset"] == "tiny-llama"
    # the cost ledger: 11 trials of 14 GPU-s, trial 0 also pre-aligned (6); 10 stage-1 hits saved 6 each
    m = run.data.metrics
    assert (m["cost_total_s"], m["cost_naive_s"], m["cost_saved_stage1_cache_s"]) == (160.0, 220.0, 60.0)
    files = {a.path for a in client.list_artifacts(parent, "report")}
    assert {f"report/{n}" for n in ("leaderboard.md", "leaderboard.csv", "table.md", "table.csv", "study.yaml",
                                    "study_resolved.yaml", "visual_tokens.md", "visual_tokens.csv",
                                    "visual_tokens.png", "cost.json", *PLOTS)} <= files
    table = open(client.download_artifacts(parent, "report/table.md", str(views["work"] / "dl-t"))).read()
    assert table.startswith("| #Enc | Combination | GQA (%) | MME (pts) |") and "Greedy path: A+B (658.3)" in table
    board = open(client.download_artifacts(parent, "report/leaderboard.csv", str(views["work"] / "dl-l"))).read()
    assert len(board.splitlines()) == 12 and board.splitlines()[1].split(",")[1] == "A+B+F+E+C"
    resolved = yaml.safe_load(open(client.download_artifacts(parent, "report/study_resolved.yaml",
                                                             str(views["work"] / "dl-r"))))
    assert resolved["base_trial"]["llm"]["preset"] == "tiny-llama" and "experts" in resolved["search_space"]
    for name in PLOTS:  # real PNG images, redrawn as trials were added
        early, late = views["early"][name], views["late"][name]
        assert late[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(late)).size[0] >= 600
        assert early != late, name
        assert (views["work"] / "report" / NAME / name).read_bytes() == late  # the same files in the workdir


def test_optuna_study_as_the_dashboard_reads_it(views):
    study = views["study"]
    assert study.metric_names == ["avg"]
    t = next(t for t in study.trials if t.user_attrs["experts"] == "A+B+F")
    ua = t.user_attrs
    assert ua["label"] == f"A+B+F · r1 · #{t.number}"
    assert ua["score/ocrbench"] == 562 and "scores" not in ua
    assert ua["mlflow_run_url"] == f"http://127.0.0.1:5000/#/experiments/{study.user_attrs['mlflow_experiment_id']}" \
                                   f"/runs/{ua['mlflow_run_id']}?workflowType=machine_learning"
    # settings every trial shares are attrs, not search dimensions
    assert set(t.params) == {"expert_C", "expert_D", "expert_E", "expert_F"}
    assert (ua["fixed.fusion"], ua["fixed.resolution"], ua["fixed.expert_A"]) == ("channel_concat", "preset", True)


def test_moved_workdir_still_finds_its_artifacts_and_report(views, tmp_path):
    work = views["work"]
    moved = tmp_path / "moved"
    shutil.copytree(work, moved)
    hidden = work.with_name(work.name + "-gone")
    work.rename(hidden)  # the old place no longer exists
    try:
        res = CliRunner().invoke(app, ["ui", "--workdir", str(moved), "--dry-run"])
        assert res.exit_code == 0 and "--workers 1" in res.stdout
        exp_id = MlflowClient(default_tracking_uri(moved)).get_experiment_by_name(NAME).experiment_id
        assert study_url(load_study(moved / "study.yaml"), default_tracking_uri(moved), 5000) == \
            f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey=eagle"
        res = CliRunner().invoke(app, ["report", str(moved / "study.yaml"), "--workdir", str(moved)])
        assert res.exit_code == 0, res.output
        assert str(moved / "report" / NAME / "pareto.png") in res.stdout.splitlines()
        cost_line = "cost: 160.0 s GPU time over 11 of 11 trials (naive: 220.0 s, 0.727 of it)"
        assert cost_line in res.stdout.splitlines()
        res = CliRunner().invoke(app, ["leaderboard", str(moved / "study.yaml"), "--workdir", str(moved)])
        assert res.exit_code == 0 and cost_line in res.stdout.splitlines()  # the leaderboard's footer
        client = MlflowClient(default_tracking_uri(moved))
        exp = client.get_experiment_by_name(NAME)
        assert exp.artifact_location == f"{(moved / 'mlartifacts').as_uri()}/{NAME}"
        run = client.search_runs([exp.experiment_id], "params.experts = 'A+B+F'")[0]
        assert run.info.artifact_uri.startswith((moved / "mlartifacts").as_uri())
        local = client.download_artifacts(run.info.run_id, "result.json", str(tmp_path / "dl"))
        assert '"objective": 665.3' in open(local).read()
        parent = client.download_artifacts(views["parent"], "report/pareto.png", str(tmp_path / "dl2"))
        assert open(parent, "rb").read()[:4] == b"\x89PNG"
    finally:
        hidden.rename(work)
