"""Run by test_lmms_model.py under the interpreter that has the `lmms` extra (EAGLE_TEST_LMMS_PYTHON),
on a finished tiny trial: `evaluator TRIAL TMP` scores the trial and its export through lmms-eval's
evaluator as the registered model `eagle_explorer` beside the project's own GQA evaluation; `cli
TRIAL TMP` runs `eagle-explore eval --harness lmms-eval`. Each prints what it saw as one JSON line.
A script, not a test module: lmms-eval's dependency latex2sympy2 installs a `tests` package that
would shadow this repository's."""
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import lmms_local_task as lmms_task  # noqa: E402  (this script's folder is on sys.path)

from trainers.eval.benchmarks import get_benchmark  # noqa: E402
from trainers.eval.synthetic_suite import ensure_suite  # noqa: E402

TASK = "eagle_tiny_gqa"


def _gqa_items(trial: Path) -> list:
    return get_benchmark("gqa").load(ensure_suite(trial.parents[2] / "cache", 6, 0, 32) / "gqa")


def evaluator(trial: Path, tmp: Path) -> dict:
    """The project's GQA predictions on 6 items, and lmms-eval's samples and mean on the same items
    for the trial directory and for its export."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from trainers.eval.cli import run_eval
    from trainers.modeling.export import export_model

    run_eval(trial, "gqa", limit=6, out_dir=tmp / "eval")
    preds = [json.loads(line) for line in (tmp / "eval/predictions/gqa.jsonl").read_text().splitlines()]
    items = {it.qid: it for it in _gqa_items(trial)}
    tasks = TaskManager(include_path=str(lmms_task.local_task(tmp, [items[p["question_id"]] for p in preds])),
                        include_defaults=False)
    exported = export_model(trial, tmp / "model")
    runs = {}
    for name, source in (("trial", trial), ("export", exported)):
        out = simple_evaluate(model="eagle_explorer", model_args=f"trial={source},batch_size=4", tasks=[TASK],
                              task_manager=tasks, log_samples=True, bootstrap_iters=0)
        samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
        runs[name] = {"answers": [s["filtered_resps"][0] for s in samples],
                      "exact_match": [s["exact_match"] for s in samples],
                      "mean": out["results"][TASK]["exact_match,none"]}
    return {"predictions": preds, "runs": runs}


def _read(path: Path):
    return path.read_text() if path.exists() else None


def cli(trial: Path, tmp: Path) -> dict:
    """`eval --harness lmms-eval` on a local task (4 items), on an unknown task, and on a task whose
    hub dataset is not cached (offline): exit codes, outputs and what the first wrote."""
    from typer.testing import CliRunner

    from explorer.cli.main import app

    runner = CliRunner()

    def invoke(*args: str) -> dict:
        res = runner.invoke(app, ["eval", str(trial), "--harness", "lmms-eval", *args])
        return {"exit_code": res.exit_code, "output": res.output, "exception": repr(res.exception)}

    tasks = str(lmms_task.local_task(tmp, _gqa_items(trial)[:4]))
    out = {"local": invoke("--tasks", TASK, "--include-path", tasks, "--out", str(tmp / "out")),
           "samples": _read(tmp / f"out/lmms_eval/samples_{TASK}.jsonl"),
           "results": _read(tmp / "out/lmms_eval/results.json"),
           "unknown": invoke("--tasks", "nope_task", "--include-path", tasks)}
    hub = lmms_task.write_task(tmp / "hub_task", "hub_gqa", "lmms-lab/not-cached-here", dataset_kwargs="{}")
    os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"))
    out["hub"] = invoke("--tasks", "hub_gqa", "--include-path", str(hub))
    return out


if __name__ == "__main__":
    check = {"evaluator": evaluator, "cli": cli}[sys.argv[1]]
    print(json.dumps(check(Path(sys.argv[2]), Path(sys.argv[3])), default=str))
