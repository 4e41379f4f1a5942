"""The pre-flight: each class of bad input found before anything runs is one line naming the file
and the field, exit 2, and nothing written; `eagle-explore check` is that pre-flight alone."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from explorer.cli.main import app
from explorer.preflight import CheckedStudy, CheckedTrial, PreflightError, preflight, study_trial_points
from explorer.strategies import build_strategy
from explorer.study.load import load_study
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

STUDY = {
    "name": "pf", "strategy": {"type": "greedy", "base": ["A", "B"], "candidates": ["C", "D"], "max_size": 4},
    "search_space": "eagle_tiny",
    "base_trial": {"experts": [{"preset": "tiny-clip"}, {"preset": "tiny-convnext"}], "llm": {"preset": "tiny-llama"},
                   "data": {"synthetic": {"n_sft": 16}}, "eval": {"benchmarks": ["gqa"], "limit": 4}},
}


def _study(tmp_path: Path, mutate=None, name: str = "s.yaml") -> Path:
    data = copy.deepcopy(STUDY)
    if mutate is not None:
        mutate(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def no_trial_runs(monkeypatch):
    """Whatever the pre-flight misses must not start a real trial here."""
    import explorer.controller

    def runner_(job):
        raise AssertionError(f"trial {job.number} started: the pre-flight let it through")

    monkeypatch.setattr(explorer.controller, "LocalRunner", lambda: runner_)


def _one_error_line(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _base(**kw):
    return lambda d: d["base_trial"].update(**kw)


@pytest.mark.parametrize("mutate, needles", [
    # a missing data file or benchmark folder used to be found only when the trial launched
    (_base(data={"pretrain": "/nope/p.json", "sft": "/nope/s.json"}), ["base_trial", "data.pretrain", "/nope/p.json"]),
    (lambda d: d["base_trial"]["eval"].update(data_root="/nope/eval"), ["eval.data_root", "/nope/eval"]),
    # wrong types deep in the base trial used to end in TypeError tracebacks
    (_base(experts=[{"preset": {"name": "tiny-clip"}}]), ["base_trial: experts.0.preset", "valid string"]),
    (_base(eval=3), ["base_trial: eval:"]),
    # an impossible expert setting used to be found inside the torchrun workers
    (_base(experts=[{"preset": "tiny-clip", "input_size": 50}]), ["experts.0", "not a multiple of the backbone stride"]),
    # a candidate of a later round whose grid cannot match the base's
    (_base(experts=[{"preset": "tiny-clip"}, {"preset": "tiny-sam", "grid": 2}]), ["A+B+C", "grid"]),
    (_base(fusion={"name": "mini_gemini", "options": {"bogus": 1}}), ["fusion"]),
    (lambda d: d.update(objective={"metric": "nope"}), ["eval.objective", "'nope'"]),
    (lambda d: d["base_trial"]["data"]["synthetic"].update(n_sft=8), ["data.synthetic.n_sft", "fewer than one global batch"]),
])
def test_run_stops_before_anything_is_written(tmp_path, mutate, needles):
    study = _study(tmp_path, mutate)
    work = tmp_path / "work"
    _one_error_line(runner.invoke(app, ["run", str(study), "--workdir", str(work)]), str(study), *needles)
    assert not work.exists()


def test_a_tracking_store_that_cannot_be_created_is_found_first(tmp_path):
    (tmp_path / "afile").write_text("")
    study = _study(tmp_path, lambda d: d.update(tracking_uri=f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"))
    work = tmp_path / "work"
    res = runner.invoke(app, ["run", str(study), "--workdir", str(work)])
    _one_error_line(res, f"{study}: tracking_uri: {tmp_path / 'afile'} exists and is not a directory")
    res = runner.invoke(app, ["check", str(_study(tmp_path)), "--workdir", str(tmp_path / "afile")])
    _one_error_line(res, "--workdir: ", "is not a directory")
    assert not work.exists()


def test_unreachable_database_is_found_before_the_mlflow_store_exists(tmp_path):
    study = _study(tmp_path, lambda d: d.update(storage="postgresql://nobody@127.0.0.1:1/none"))
    work = tmp_path / "work"
    _one_error_line(runner.invoke(app, ["run", str(study), "--workdir", str(work)]), f"{study}: storage: cannot reach", "127.0.0.1")
    assert not work.exists()


def test_a_mismatching_stored_study_is_found_before_the_mlflow_store_exists(tmp_path):
    import optuna

    work = tmp_path / "work"
    work.mkdir()
    optuna.create_study(study_name="pf", storage=f"sqlite:///{work / 'study.db'}", direction="minimize")
    before = sorted(p.name for p in work.iterdir())
    res = runner.invoke(app, ["run", str(_study(tmp_path)), "--workdir", str(work)])
    _one_error_line(res, "study 'pf' is stored as minimize")
    assert sorted(p.name for p in work.iterdir()) == before  # no mlflow.db


def test_a_worker_needs_the_study_it_joins(tmp_path):
    work = tmp_path / "work"
    res = runner.invoke(app, ["worker", str(_study(tmp_path)), "--storage", f"sqlite:///{work / 'study.db'}",
                              "--workdir", str(work)])
    _one_error_line(res, "no study database at")
    assert not work.exists()


def test_check_a_good_study_and_trial_writes_nothing(tmp_path):
    study = _study(tmp_path)
    work = tmp_path / "work"
    res = runner.invoke(app, ["check", str(study), "--workdir", str(work)])
    assert res.exit_code == 0, res.output
    # r0 A+B, r1 A+B+C and A+B+D, the largest set A+B+C+D
    assert res.stdout.strip() == (f"ok: {study}: study pf: 4 trial spec(s) checked; storage "
                                  f"sqlite:///{work.resolve() / 'study.db'}; tracking sqlite:///{work.resolve() / 'mlflow.db'}")
    res = runner.invoke(app, ["check", str(ROOT / "studies" / "trials" / "tiny.yaml")])
    assert res.exit_code == 0, res.output
    assert "trial tiny-eagle: tiny-clip+tiny-convnext, fusion channel_concat, recipe eagle" in res.stdout
    assert not work.exists() and sorted(tmp_path.iterdir()) == [study]


def test_the_function_returns_what_it_checked(tmp_path):
    checked = preflight(_study(tmp_path), workdir=tmp_path / "w")
    assert isinstance(checked, CheckedStudy) and checked.services_reached and checked.trials_checked == 4
    assert checked.storage_url == f"sqlite:///{(tmp_path / 'w').resolve() / 'study.db'}"
    assert checked.artifact_root == ((tmp_path / "w").resolve() / "mlartifacts").as_uri()
    trial = preflight(ROOT / "studies" / "trials" / "tiny.yaml")
    assert isinstance(trial, CheckedTrial) and [e.preset for e in trial.spec.experts] == ["tiny-clip", "tiny-convnext"]
    with pytest.raises(PreflightError, match="a study file, not a trial spec"):
        preflight(_study(tmp_path), expect="trial")


def test_every_greedy_candidate_and_grid_point_is_built():
    spec = load_study(ROOT / "studies" / "tiny_greedy.yaml")
    experts = sorted(a["experts"] for _, a in study_trial_points(build_strategy(spec)))
    # round 1's four and one four-expert set (round 2's are built like it): max_size 4
    assert experts == ["A+B", "A+B+C", "A+B+C+D", "A+B+D", "A+B+E", "A+B+F"]
    twin = load_study(ROOT / "studies" / "tiny_greedy_permuted.yaml")
    skills = {e["preset"]: e["skill"] for e in twin.base_trial_data["experts"]}
    assert (skills["tiny-dinov2"], skills["tiny-pix2struct"], skills["tiny-clip"]) == ("read", "rotation", True)
    assert sorted(a["experts"] for _, a in study_trial_points(build_strategy(twin))) == experts  # max_size 4 too
    grid = load_study(ROOT / "studies" / "tiny_resolution.yaml")
    points = study_trial_points(build_strategy(grid))
    assert len(points) == 10 and {p["resolution"] for p, _ in points} == {"original", "interpolate_448",
                                                                           "interpolate_672", "tiled_672", "dynamic_672"}


def _trial_file(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    data.update(changes)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_trial_checks_files_benchmark_copies_and_the_study_kind(tmp_path):
    from trainers.data.synthetic import write_sft
    from trainers.eval import write_suite

    out = tmp_path / "out"
    data = tmp_path / "data"
    sft = write_sft(data, 4, 0, 32)
    images = next(p for p in data.rglob("*") if p.is_dir())
    for data_spec, field in [({"pretrain": str(sft), "sft": str(sft)}, "data.image_folder"),
                             ({"pretrain": str(sft), "sft": str(tmp_path / "nope.txt"), "image_folder": str(images)},
                              "data.sft")]:
        path = _trial_file(tmp_path, data=data_spec)
        _one_error_line(runner.invoke(app, ["trial", str(path), "--out", str(out)]), str(path), field)
    ok = _trial_file(tmp_path, data={"pretrain": str(sft), "sft": str(sft), "image_folder": str(images)})
    assert runner.invoke(app, ["check", str(ok)]).exit_code == 0
    root = write_suite(tmp_path / "eval", 2, 0, 32, ["gqa", "pope"])
    (root / "pope" / "coco_pope_random.json").unlink()
    bad = _trial_file(tmp_path, eval={"benchmarks": ["gqa", "pope"], "data_root": str(root)})
    _one_error_line(runner.invoke(app, ["check", str(bad), "--staged"]), "eval.data_root", "pope", "coco_pope_random.json")
    _one_error_line(runner.invoke(app, ["trial", str(_study(tmp_path)), "--out", str(out)]), "a study file")
    assert not out.exists()


def test_eval_checks_its_benchmarks_before_writing(tmp_path):
    ckpt = tmp_path / "trial"
    (ckpt / "stages" / "sft" / "model").mkdir(parents=True)
    (ckpt / "stages" / "sft" / "model" / "eagle.json").write_text(json.dumps({}))
    (ckpt / "trial.yaml").write_text((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["eval", str(ckpt), "--benchmarks", "gqa", "--data-root", str(tmp_path / "empty")])
    _one_error_line(res, "eval.data_root", "gqa: no copy at")
    res = runner.invoke(app, ["eval", str(ckpt), "--benchmarks", "gqa,nope"])
    _one_error_line(res, "--benchmarks", "unknown benchmark 'nope'")
    # a model config that is not this trial's used to end in KeyError: 'num_experts' after eval/ was made
    res = runner.invoke(app, ["eval", str(ckpt), "--benchmarks", "gqa"])
    _one_error_line(res, "eagle.json: num_experts is None", "has 2 experts")
    trial = yaml.safe_load((ckpt / "trial.yaml").read_text())
    trial["experts"][0]["input_size"] = 50  # its experts are built on the meta device too
    (ckpt / "trial.yaml").write_text(yaml.safe_dump(trial))
    res = runner.invoke(app, ["eval", str(ckpt), "--benchmarks", "gqa"])
    _one_error_line(res, f"{ckpt / 'trial.yaml'}: experts.0", "not a multiple of the backbone stride")
    assert not (ckpt / "eval").exists()


def test_a_changed_base_trial_is_found_before_anything_is_written(tmp_path, monkeypatch):
    import explorer.controller
    from explorer.study.storage import BASE_CHANGES_ATTR, open_study

    work = tmp_path / "work"
    url = f"sqlite:///{work / 'study.db'}"
    open_study(load_study(_study(tmp_path)), url)  # the study as `run` created it
    changed = _study(tmp_path, lambda d: d["base_trial"]["eval"].update(limit=2), "changed.yaml")
    before = sorted(p.name for p in work.iterdir())
    for args in (["run"], ["check"], ["worker", "--storage", url]):
        res = runner.invoke(app, [*args[:1], str(changed), "--workdir", str(work), *args[1:]])
        _one_error_line(res, "different base trial", "changed eval.limit (4 -> 2)", "--accept-base-change")
        assert sorted(p.name for p in work.iterdir()) == before, args  # no MLflow store, no lock file

    # accepted: past the pre-flight, the change is recorded in the study
    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(explorer.controller, "run_study", stop)
    res = runner.invoke(app, ["run", str(changed), "--workdir", str(work), "--accept-base-change"])
    assert res.exit_code == 130, res.output
    import optuna

    study = optuna.load_study(study_name="pf", storage=url)
    history = study._storage.get_study_system_attrs(study._study_id)[BASE_CHANGES_ATTR]
    assert [h["changed"] for h in history] == [["eval.limit (4 -> 2)"]]
