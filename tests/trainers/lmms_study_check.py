"""Run by test_lmms_study.py under the interpreter that has the `lmms` extra (EAGLE_TEST_LMMS_PYTHON):
a whole study (`eagle-explore run`, two real tiny trials) whose objective is a local lmms-eval task,
then its leaderboard, CSV export, MLflow runs and the best trial's model export, printed as one
JSON line. A script, not a test module: lmms-eval's dependency latex2sympy2 installs a `tests`
package that would shadow this repository's."""
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lmms_local_task as lmms_task  # noqa: E402  (this script's folder is on sys.path)

from mlflow.tracking import MlflowClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from explorer.cli.main import app  # noqa: E402
from trainers.eval.benchmarks import get_benchmark  # noqa: E402
from trainers.eval.synthetic_suite import ensure_suite  # noqa: E402
from trainers.modeling.export import load_exported  # noqa: E402

tmp = Path(sys.argv[1])
items = get_benchmark("gqa").load(ensure_suite(tmp / "suite", 32, 0, 64) / "gqa")
tasks = lmms_task.local_task(tmp, items)
base = yaml.safe_load((ROOT / "studies/trials/tiny.yaml").read_text())
base["data"]["synthetic"].update(n_pretrain=16, n_sft=128, n_heldout=8)
for name, stage in base["train"]["stages"].items():  # SFT long enough that some answers are right
    stage.update(max_steps=4) if name != "sft" else stage.update(epochs=8, lr=2.0e-3)
base["eval"] = {"harness": "lmms-eval", "tasks": ["eagle_tiny_gqa"], "include_path": str(tasks),
                "objective": "avg", "max_new_tokens": 4, "batch_size": 8}
study = tmp / "lmms_study.yaml"
study.write_text(yaml.safe_dump({
    "name": "lmms_study", "strategy": {"type": "grid", "experts": ["A", "B"],
                                       "axes": {"fusion": ["channel_concat", "sequence_append"]}},
    "search_space": "eagle_tiny", "base_trial": base, "objective": {"metric": "avg", "direction": "maximize"},
    "resources": {"max_concurrent_trials": 2}, "poll_interval_s": 0.2}))
work = tmp / "work"
runner = CliRunner()
run = runner.invoke(app, ["run", str(study), "--workdir", str(work)], env={"COLUMNS": "200"})
board = runner.invoke(app, ["leaderboard", str(study), "-w", str(work)], env={"COLUMNS": "200"})
csv = runner.invoke(app, ["export", str(study), "-w", str(work), "--format", "csv"])
results = {p.parent.name: json.loads(p.read_text()) for p in (work / "trials" / "lmms_study").glob("*/result.json")}
client = MlflowClient(f"sqlite:///{(work / 'mlflow.db').resolve()}")
exp = client.get_experiment_by_name("lmms_study")
runs = [{"tags": r.data.tags, "metrics": r.data.metrics} for r in client.search_runs([exp.experiment_id])] if exp else []
best = max(results, key=lambda k: results[k]["objective"]) if results else None
exported = {}
if best:
    out = tmp / "exported"
    ex = runner.invoke(app, ["export-model", str(work / "trials" / "lmms_study" / best), str(out)])
    card = (out / "README.md").read_text() if (out / "README.md").is_file() else ""
    first = (work / "trials" / "lmms_study" / best / "predictions" / "eagle_tiny_gqa.jsonl").read_text().splitlines()[0]
    exported = {"exit": ex.exit_code, "output": ex.output[-2000:], "card": card, "trial_answer": json.loads(first)["answer"],
                "answer": load_exported(out).answer([items[0].load_image()], [items[0].prompt])[0] if ex.exit_code == 0 else None}
print(json.dumps({"run": {"exit": run.exit_code, "output": run.output[-4000:]},
                  "leaderboard": {"exit": board.exit_code, "output": board.output},
                  "csv": {"exit": csv.exit_code, "output": csv.stdout}, "results": results, "runs": runs,
                  "best": best, "exported": exported}, default=str))
