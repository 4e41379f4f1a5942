"""Run by test_lmms_objective.py under the interpreter that has the `lmms` extra
(EAGLE_TEST_LMMS_PYTHON): a tiny trial's final evaluation on a local lmms-eval task (harness
lmms-eval), its result printed as one JSON line. A script, not a test module: lmms-eval's dependency
latex2sympy2 installs a `tests` package that would shadow this repository's."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import helpers_eagle as helpers  # noqa: E402  (this script's folder is on sys.path)
import lmms_local_task as lmms_task  # noqa: E402

from trainers.eval.benchmarks import get_benchmark  # noqa: E402
from trainers.eval.lmms_objective import evaluate_tasks  # noqa: E402
from trainers.eval.synthetic_suite import ensure_suite  # noqa: E402
from trainers.modeling.eagle import EagleModel  # noqa: E402
from trainers.preflight import check_eval_spec  # noqa: E402
from trainers.spec import load_trial_spec  # noqa: E402

tmp = Path(sys.argv[1])
trial = helpers.finished_trial(tmp)
tasks = lmms_task.local_task(tmp, get_benchmark("gqa").load(ensure_suite(tmp / "cache", 6, 0, 32) / "gqa"))
spec = load_trial_spec(trial / "trial.yaml")
spec = spec.model_copy(update={"eval": spec.eval.model_copy(update={
    "harness": "lmms-eval", "tasks": ["eagle_tiny_gqa"], "include_path": str(tasks)})})
check_eval_spec(spec.eval, "trial.yaml")  # the pre-flight passes
model = EagleModel.from_pretrained(trial / "stages/sft/model").eval()
ev = evaluate_tasks(model, spec, tmp / "out")
rows = [json.loads(line) for line in (tmp / "out/predictions/eagle_tiny_gqa.jsonl").read_text().splitlines()]
print(json.dumps({"result": ev, "predictions": rows}, default=str))
