"""Run by test_lmms_objective.py under the interpreter that has the `lmms` extra
(EAGLE_TEST_LMMS_PYTHON): a tiny trial's final evaluation on a local lmms-eval task (harness
lmms-eval), its result printed as one JSON line. A script, not a test module: lmms-eval's dependency
latex2sympy2 installs a `tests` package that would shadow this repository's."""
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests/trainers" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers, lmms_task = _load("helpers_eagle"), _load("lmms_local_task")

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
