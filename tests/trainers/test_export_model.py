"""`eagle-explore export-model`: a trial's model as a self-contained directory that loads with one call
and answers as the trial's evaluation did; bad sources and targets are one line each."""
import json

import pytest
from typer.testing import CliRunner

from explorer.cli.main import app
from tests.trainers.helpers_eagle import finished_trial
from trainers.eval.benchmarks import get_benchmark
from trainers.eval.cli import run_eval
from trainers.eval.synthetic_suite import ensure_suite
from trainers.modeling.export import ExportError, export_model, load_exported

pytestmark = pytest.mark.slow  # building and saving the tiny model takes ~10 s on 2 shared cores


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return finished_trial(tmp_path_factory.mktemp("export"))


def test_the_export_loads_alone_and_answers_as_the_trial_was_scored(trial, tmp_path):
    scored = run_eval(trial, "gqa", limit=6, out_dir=tmp_path / "eval")
    preds = [json.loads(line) for line in (tmp_path / "eval/predictions/gqa.jsonl").read_text().splitlines()]
    out = export_model(trial, tmp_path / "model")
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in out.rglob("*"))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "eagle.json", "experts", "inference.json", "llm",
                                                      "projector.safetensors", "tokenizer"]
    info = json.loads((out / "inference.json").read_text())
    assert (info["mixture"], info["template"], info["image_side"], info["max_new_tokens"]) == ("A+B", "vicuna_v1", 32, 4)
    assert (info["study"], info["trial"], info["scores"]) == ("tiny_greedy_v2", "tiny-greedy-3", {"gqa": 12.5})
    card = (out / "README.md").read_text()
    assert "tiny_greedy_v2" in card and "| gqa | 12.50 | 10.00 |" in card and "load_exported" in card

    model = load_exported(out)  # nothing of the trial directory is read from here on
    items = {it.qid: it for it in get_benchmark("gqa").load(ensure_suite(trial.parents[2] / "cache", 6, 0, 32) / "gqa")}
    got = model.answer([items[p["question_id"]].load_image() for p in preds], [items[p["question_id"]].prompt for p in preds])
    assert got == [p["answer"] for p in preds] and len(got) == 6
    assert scored["scores"]["gqa"] == pytest.approx(100 * sum(p["score"] for p in preds) / len(preds))


def test_bad_sources_and_targets_are_one_line(trial, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ExportError, match="full exists and is not an empty directory"):
        export_model(trial, tmp_path / "full")
    with pytest.raises(ExportError, match="neither a trial directory"):
        export_model(tmp_path, tmp_path / "out")
    with pytest.raises(ExportError, match="no inference.json"):
        load_exported(trial / "stages" / "sft" / "model")
    res = CliRunner().invoke(app, ["export-model", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, ["export-model", str(trial), str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "inference.json").is_file()
