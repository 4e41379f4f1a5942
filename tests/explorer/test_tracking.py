"""MLflow tracking of a study run by the real controller (scripted trials), read back through
MlflowClient; plus the pieces that must fail early and clearly."""
import optuna
import pytest
from mlflow.tracking import MlflowClient

from explorer.controller import run_study
from explorer.tracking.tracker import MlflowTracker, TrackingError, default_artifact_root, default_tracking_uri
from test_report_support import PaperRunner, study_spec

PARENT = "tags.`mlflow.parentRunId`"


def _tracker(work, name):
    return MlflowTracker(default_tracking_uri(work), name, artifact_root=default_artifact_root(work))


def _children(client, exp_id, parent):
    return client.search_runs([exp_id], filter_string=f"{PARENT} = '{parent}'", max_results=100)


@pytest.mark.slow
def test_study_logs_parent_children_params_metrics_artifacts(tmp_path):
    spec = study_spec("paper-greedy", tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # First controller: stopped (Ctrl-C) during its 4th trial; then the same study resumed to the end.
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, storage, tmp_path, tracker=_tracker(tmp_path, spec.name),
                  runner=PaperRunner(fail={"A+B+D"}, prune={"A+B+F+D"}, interrupt_at=4))
    tracker = _tracker(tmp_path, spec.name)
    outcome = run_study(spec, storage, tmp_path, tracker=tracker, runner=PaperRunner(fail={"A+B+D"}, prune={"A+B+F+D"}))
    assert outcome.finished and outcome.greedy_path == ["A+B", "A+B+F", "A+B+F+E", "A+B+F+E+C", "A+B+F+E+C+D"]
    study = optuna.load_study(study_name=spec.name, storage=storage)
    tracker.on_study_end(study)
    trials = study.get_trials()
    assert len(trials) == 12  # 11 planned + the interrupted attempt of the 4th

    client = MlflowClient(default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("paper-greedy")
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert study.user_attrs["mlflow_experiment_id"] == exp.experiment_id
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.tags["best_experts"] == "A+B+F+E+C"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == 13  # one parent + one child per trial: the resume duplicated nothing
    children = _children(client, exp.experiment_id, parent)
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [t.number for t in trials]
    for t in trials:  # each trial's run id is in the study database, where status/report read it
        assert t.user_attrs["mlflow_run_id"] in {r.info.run_id for r in children}

    by_state = {}
    for r in children:
        by_state.setdefault((r.data.tags["experts"], r.data.tags["state"]), r)
    run = by_state[("A+B+F", "COMPLETE")]
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("A+B+F · r1 · #")
    assert (run.data.params["round"], run.data.params["candidate"], run.data.params["seed"]) == ("1", "F", "0")
    assert run.data.params["expert.F"] == "true" and run.data.params["expert.C"] == "false"
    assert [run.data.params[f"spec.expert.{x}.preset"] for x in "ABF"] == ["tiny-clip", "tiny-convnext", "tiny-eva02"]
    assert run.data.params["spec.llm.preset"] == "tiny-llama"
    assert run.data.metrics["avg"] == pytest.approx(665.3) and "objective" not in run.data.metrics
    assert run.data.metrics["score/ocrbench"] == pytest.approx(562)
    assert run.data.metrics["peak_memory_mb"] == pytest.approx(321.0)
    assert run.data.metrics["stage_time_s/sft"] == pytest.approx(4.0)
    assert run.data.metrics["throughput/sft/samples_per_s"] == pytest.approx(12.0)
    history = client.get_metric_history(run.info.run_id, "sft/loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4] and history[0].value > history[-1].value
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"trial.yaml", "result.json", "metrics.jsonl", "predictions", "logs"} <= top
    assert [a.path for a in client.list_artifacts(run.info.run_id, "predictions")] == ["predictions/gqa.jsonl"]
    number = int(run.data.tags["trial_number"])
    local = client.download_artifacts(run.info.run_id, "logs/rank0.log", str(tmp_path / "dl"))
    assert open(local).read() == f"trial {number} ran\n"
    assert str(tmp_path / "mlartifacts") in run.info.artifact_uri

    failed = by_state[("A+B+D", "FAIL")]
    assert failed.info.status == "FAILED" and "rank 1 exited" in failed.data.tags["error"]
    assert by_state[("A+B+F+D", "PRUNED")].info.status == "KILLED"
    interrupted = [r for r in children if r.data.tags["state"] == "FAIL" and "error" not in r.data.tags]
    assert len(interrupted) == 1 and interrupted[0].info.status == "KILLED"


@pytest.mark.slow
def test_unfinished_run_is_closed_on_resume(tmp_path):
    """A controller killed between trial start and end leaves a RUNNING child; once the study
    database says how the trial ended, the next start closes that run with its real status."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    tracker = _tracker(tmp_path, None)
    tracker.on_study_start(study)
    trial = study.ask()
    trial.set_user_attr("experts", "A+B")
    run_id = tracker.on_trial_start(study, trial.number, None)
    trial.set_user_attr("error", "RunnerError: rank 0 killed")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    client = MlflowClient(default_tracking_uri(tmp_path))
    assert client.get_run(run_id).info.status == "RUNNING"
    again = _tracker(tmp_path, None)
    assert again.on_study_start(optuna.load_study(study_name="s", storage=storage)) == tracker.parent_run_id
    assert client.get_run(run_id).info.status == "FAILED"
    assert len(client.search_runs([study.user_attrs["mlflow_experiment_id"]])) == 2


def test_unreachable_server_fails_at_start():
    with pytest.raises(TrackingError, match=r"MLflow tracking server http://127.0.0.1:9 is unreachable"):
        MlflowTracker("http://127.0.0.1:9", "x").check()


def test_bad_uri_is_one_line():
    with pytest.raises(TrackingError, match="is not a URI"):
        MlflowTracker("not a uri", "x")
