"""Run by test_lmms_objective.py under the interpreter that has the `lmms` extra
(EAGLE_TEST_LMMS_PYTHON): a tiny trial's final evaluation on a local lmms-eval task (harness
lmms-eval), its result printed as one JSON line. A script, not a test module: lmms-eval's dependency
latex2sympy2 installs a `tests` package that would shadow this repository's."""
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("helpers_eagle", ROOT / "tests/trainers/helpers_eagle.py")
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

import datasets  # noqa: E402

from trainers.eval.benchmarks import get_benchmark  # noqa: E402
from trainers.eval.lmms_objective import evaluate_tasks  # noqa: E402
from trainers.eval.synthetic_suite import ensure_suite  # noqa: E402
from trainers.modeling.eagle import EagleModel  # noqa: E402
from trainers.preflight import check_eval_spec  # noqa: E402
from trainers.spec import load_trial_spec  # noqa: E402

UTILS = '''def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''

tmp = Path(sys.argv[1])
trial = helpers.finished_trial(tmp)
items = get_benchmark("gqa").load(ensure_suite(tmp / "cache", 6, 0, 32) / "gqa")
rows = {"question_id": [it.qid for it in items], "question": [it.prompt for it in items],
        "answer": [str(it.answer) for it in items], "image": [it.load_image() for it in items]}
datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())}).save_to_disk(
    str(tmp / "data"))
tasks = tmp / "tasks"
tasks.mkdir()
(tasks / "utils.py").write_text(UTILS)
(tasks / "eagle_tiny_gqa.yaml").write_text(textwrap.dedent(f"""\
    task: eagle_tiny_gqa
    dataset_path: {tmp / 'data'}
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
spec = load_trial_spec(trial / "trial.yaml")
spec = spec.model_copy(update={"eval": spec.eval.model_copy(update={
    "harness": "lmms-eval", "tasks": ["eagle_tiny_gqa"], "include_path": str(tasks)})})
check_eval_spec(spec.eval, "trial.yaml")  # the pre-flight passes
model = EagleModel.from_pretrained(trial / "stages/sft/model").eval()
ev = evaluate_tasks(model, spec, tmp / "out")
rows = [json.loads(line) for line in (tmp / "out/predictions/eagle_tiny_gqa.jsonl").read_text().splitlines()]
print(json.dumps({"result": ev, "predictions": rows}, default=str))
