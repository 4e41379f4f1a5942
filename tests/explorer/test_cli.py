"""The command line: status --json, export, leaderboard, bad study files, ui --dry-run."""
import json
import shlex
import sys

import pytest
import yaml
from typer.testing import CliRunner

from explorer.cli.main import app
from test_report_support import scripted_study

runner = CliRunner()

STUDY = {
    "name": "paper-greedy",
    "strategy": {"type": "greedy", "base": ["A", "B"], "max_size": 6},
    "search_space": "eagle_tiny",
    "base_trial": {"experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama"},
                   "data": {"synthetic": {"n_sft": 16}}, "eval": {"benchmarks": ["gqa"]}},
}


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    scripted_study(f"sqlite:///{work / 'study.db'}", work)
    _write(work / "study.yaml", STUDY)
    return work


def test_status_json(workdir):
    res = runner.invoke(app, ["status", str(workdir / "study.yaml"), "--workdir", str(workdir), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["study"] == "paper-greedy" and len(doc["trials"]) == 11
    assert [t["experts"] for t in doc["trials"][:2]] == ["A+B", "A+B+C"]
    assert {"number", "state", "params", "value", "round", "candidate", "mlflow_run_id"} <= set(doc["trials"][0])
    assert doc["best"]["experts"] == "A+B+F+E+C"


def test_export_markdown_and_csv(workdir, tmp_path):
    res = runner.invoke(app, ["export", str(workdir / "study.yaml"), "--workdir", str(workdir)])
    assert res.exit_code == 0, res.output
    assert "| 5 | A+B+F+E+C | 65.7 | 1511.0 | 37.6 | 548.0 | 72.7 | 88.6 | 71.6 | 666.5 |" in res.stdout
    assert "Greedy path: A+B (658.3) -> A+B+F (665.3)" in res.stdout
    out = tmp_path / "t.csv"
    res = runner.invoke(app, ["export", str(workdir / "study.yaml"), "-w", str(workdir), "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("#Enc,Combination,GQA (%),GQA (%) lo,GQA (%) hi,GQA (%) blind,MME (pts),") and len(lines) == 12
    assert lines[0].endswith(",Avg (1000-pt),Avg (1000-pt) lo,Avg (1000-pt) hi,Avg (1000-pt) blind,seeds,seed sd,tied with best")


def test_export_unknown_format(workdir):
    res = runner.invoke(app, ["export", str(workdir / "study.yaml"), "-w", str(workdir), "--format", "html"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: --format: unknown format 'html'; known: markdown, csv"


def test_leaderboard_shows_best_first(workdir):
    res = runner.invoke(app, ["leaderboard", str(workdir / "study.yaml"), "-w", str(workdir), "--top", "3"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    body = res.stdout
    assert body.index("A+B+F+E+C ") < body.index("A+B+F+E ") < body.index("A+B+F ")
    assert "A+B+D " not in body and "Greedy path:" in body


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(strategy={"type": "greedy", "bogus": 1}), "strategy.bogus: unknown key"),
    (lambda d: d.update(strategy={"type": "greedy", "base": ["A", "Z"]}), "strategy.base: unknown expert letter 'Z'"),
    (lambda d: d.update(storage="mysql://x/y"), "storage: unsupported database 'mysql'"),
    (lambda d: d["base_trial"].update(llm={"preset": "tiny-llama", "source": "x"}), "base_trial"),
])
def test_bad_study_file_is_one_red_line_and_writes_nothing(tmp_path, mutate, expected):
    data = json.loads(json.dumps(STUDY))
    mutate(data)
    study = _write(tmp_path / "bad.yaml", data)
    work = tmp_path / "work"
    res = runner.invoke(app, ["run", str(study), "--workdir", str(work)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {study}: ") and expected in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert not work.exists()


def test_missing_study_file_and_missing_database(tmp_path):
    res = runner.invoke(app, ["run", str(tmp_path / "nope.yaml"), "--workdir", str(tmp_path / "w")])
    assert res.exit_code == 2 and "study file not found" in res.stderr and not (tmp_path / "w").exists()
    study = _write(tmp_path / "s.yaml", STUDY)
    res = runner.invoke(app, ["status", str(study), "--workdir", str(tmp_path), "--json"])
    assert res.exit_code == 2 and "no study database at" in res.stderr
    assert not (tmp_path / "study.db").exists()


def test_unreachable_database_is_one_line(tmp_path):
    study = _write(tmp_path / "s.yaml", STUDY)
    res = runner.invoke(app, ["status", str(study), "--storage", "postgresql://nobody@127.0.0.1:1/none", "--json"])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "127.0.0.1" in res.stderr


def test_ui_dry_run_prints_the_command(tmp_path):
    res = runner.invoke(app, ["ui", "--workdir", str(tmp_path), "--port", "5055", "--dry-run"])
    assert res.exit_code == 0, res.output
    url, cmd = res.stdout.strip().splitlines()
    assert url == "MLflow UI: http://127.0.0.1:5055"
    argv = shlex.split(cmd)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "5055"
    assert argv[argv.index("--default-artifact-root") + 1] == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert argv[argv.index("--workers") + 1] == "1"  # one server process unless asked for more
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    res = runner.invoke(app, ["ui", "--workdir", str(tmp_path), "--workers", "3", "--dry-run"])
    argv = shlex.split(res.stdout.strip().splitlines()[1])
    assert argv[argv.index("--workers") + 1] == "3"


def test_help_is_fast_and_lists_commands():
    import subprocess
    import time

    t = time.time()
    out = subprocess.run([sys.executable, "-m", "explorer.cli.main", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "120", "PATH": ""}, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert out.returncode == 0, out.stderr
    for cmd in ("run", "worker", "status", "leaderboard", "export", "report", "ui", "trial", "eval", "check"):
        assert f" {cmd} " in out.stdout
    assert time.time() - t < 5


def test_unreachable_tracking_server_stops_run_before_anything(tmp_path):
    study = _write(tmp_path / "s.yaml", STUDY)
    work = tmp_path / "work"
    res = runner.invoke(app, ["run", str(study), "--workdir", str(work), "--tracking-uri", "http://127.0.0.1:9"])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("error: MLflow tracking server http://127.0.0.1:9 is unreachable")
    assert not work.exists()


def test_ray_address_needs_the_ray_backend(tmp_path):
    study = _write(tmp_path / "s.yaml", STUDY)
    res = runner.invoke(app, ["run", str(study), "--workdir", str(tmp_path / "w"), "--ray-address", "10.0.0.1:6379"])
    assert res.exit_code == 2 and "--ray-address" in res.stderr and "--backend ray" in res.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("args,message", [
    (["--backend", "lsf"], "error: --backend: unknown backend 'lsf'; known: local, ray, slurm"),
    (["--ray-address", "10.0.0.1:6379"], "error: --ray-address: only used with the ray backend (add --backend ray)"),
])
def test_worker_checks_its_backend_before_anything(tmp_path, args, message):
    study = _write(tmp_path / "s.yaml", STUDY)
    res = runner.invoke(app, ["worker", str(study), "--storage", f"sqlite:///{tmp_path / 'w' / 'study.db'}",
                              "--workdir", str(tmp_path / "w"), *args])
    assert res.exit_code == 2 and res.stderr.strip() == message
    assert not (tmp_path / "w").exists()


def test_worker_runs_on_the_backend_it_is_given(workdir, monkeypatch):
    import explorer.controller

    seen = {}

    class Done:  # what the worker's summary line reads
        n_complete, n_trials, finished, stopped_reason, path = 11, 11, True, None, []

    def fake_worker(spec, storage, work, **kw):
        seen.update(backend=kw["backend"], address=spec.ray_address)
        return Done()

    monkeypatch.setattr(explorer.controller, "run_worker", fake_worker)
    res = runner.invoke(app, ["worker", str(workdir / "study.yaml"), "--storage", f"sqlite:///{workdir / 'study.db'}",
                              "--workdir", str(workdir), "--backend", "ray", "--ray-address", "10.0.0.1:6379"])
    assert res.exit_code == 0, res.output
    assert seen == {"backend": "ray", "address": "10.0.0.1:6379"}
    assert "worker done: 11 of 11 trials complete" in res.stdout
