"""A trained tiny trial scored through lmms-eval (its evaluator, its task format, its scorer) as the
registered model `eagle_explorer`: on a local task built here from the synthetic GQA items, it gives
the trial's own answers, and its exact-match score agrees with the project's GQA scorer."""
import json
import textwrap

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is the `lmms` extra (pip install -e '.[lmms]')")

from tests.trainers.helpers_eagle import finished_trial  # noqa: E402
from trainers.eval.benchmarks import get_benchmark  # noqa: E402
from trainers.eval.cli import run_eval  # noqa: E402
from trainers.eval.synthetic_suite import ensure_suite  # noqa: E402
from trainers.modeling.export import export_model  # noqa: E402

pytestmark = pytest.mark.slow

UTILS = '''
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return finished_trial(tmp_path_factory.mktemp("lmms"))


def _task(tmp_path, items) -> str:
    """An lmms-eval task over `items` (a DatasetDict saved to disk, read with load_from_disk)."""
    import datasets

    rows = {"question_id": [it.qid for it in items], "question": [it.prompt for it in items],
            "answer": [str(it.answer) for it in items], "image": [it.load_image() for it in items]}
    data = datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())})
    data.save_to_disk(str(tmp_path / "data"))
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "utils.py").write_text(UTILS)
    (task_dir / "eagle_tiny_gqa.yaml").write_text(textwrap.dedent(f"""\
        task: eagle_tiny_gqa
        dataset_path: {tmp_path / 'data'}
        dataset_kwargs: {{load_from_disk: true}}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_target: answer
        generation_kwargs: {{max_new_tokens: 4, until: ["ASSISTANT:"]}}
        metric_list:
          - {{metric: exact_match, aggregation: mean, higher_is_better: true, ignore_case: true, ignore_punctuation: true}}
        """))
    return str(task_dir)


def test_lmms_eval_scores_the_trial_with_its_own_answers(trial, tmp_path):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    run_eval(trial, "gqa", limit=6, out_dir=tmp_path / "eval")
    preds = [json.loads(line) for line in (tmp_path / "eval/predictions/gqa.jsonl").read_text().splitlines()]
    items = {it.qid: it for it in get_benchmark("gqa").load(ensure_suite(trial.parents[2] / "cache", 6, 0, 32) / "gqa")}
    tasks = TaskManager(include_path=_task(tmp_path, [items[p["question_id"]] for p in preds]), include_defaults=False)
    exported = export_model(trial, tmp_path / "model")
    for source in (trial, exported):  # a trial directory and its export are the same model
        out = simple_evaluate(model="eagle_explorer", model_args=f"trial={source},batch_size=4", tasks=["eagle_tiny_gqa"],
                              task_manager=tasks, log_samples=True, bootstrap_iters=0)
        samples = sorted(out["samples"]["eagle_tiny_gqa"], key=lambda s: s["doc_id"])
        assert [s["filtered_resps"][0] for s in samples] == [p["answer"] for p in preds]
        # exact match (case and punctuation ignored) is GQA's rule: the two scorers agree item by item
        assert [s["exact_match"] for s in samples] == [p["score"] for p in preds]
        assert out["results"]["eagle_tiny_gqa"]["exact_match,none"] == pytest.approx(
            sum(p["score"] for p in preds) / len(preds))


def test_eval_harness_lmms_eval_writes_samples_and_names_what_is_missing(trial, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from explorer.cli.main import app

    items = get_benchmark("gqa").load(ensure_suite(trial.parents[2] / "cache", 6, 0, 32) / "gqa")
    tasks = _task(tmp_path, items[:4])
    cli = CliRunner()
    res = cli.invoke(app, ["eval", str(trial), "--harness", "lmms-eval", "--tasks", "eagle_tiny_gqa",
                           "--include-path", tasks, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "eagle_tiny_gqa/exact_match:" in res.output
    lines = (tmp_path / "out/lmms_eval/samples_eagle_tiny_gqa.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads((tmp_path / "out/lmms_eval/results.json").read_text())["tasks"] == ["eagle_tiny_gqa"]

    res = cli.invoke(app, ["eval", str(trial), "--harness", "lmms-eval", "--tasks", "nope_task", "--include-path", tasks])
    assert res.exit_code == 2 and "unknown lmms-eval task 'nope_task'" in res.output and "Traceback" not in res.output
    hub = tmp_path / "hub_task"
    hub.mkdir()
    (hub / "hub_gqa.yaml").write_text((tmp_path / "tasks/eagle_tiny_gqa.yaml").read_text()
                                      .replace("task: eagle_tiny_gqa", "task: hub_gqa")
                                      .replace(f"dataset_path: {tmp_path / 'data'}", "dataset_path: lmms-lab/not-cached-here")
                                      .replace("dataset_kwargs: {load_from_disk: true}", "dataset_kwargs: {}"))
    (hub / "utils.py").write_text(UTILS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    res = cli.invoke(app, ["eval", str(trial), "--harness", "lmms-eval", "--tasks", "hub_gqa", "--include-path", str(hub)])
    assert res.exit_code == 2 and "dataset lmms-lab/not-cached-here is not in the Hugging Face cache" in res.output
