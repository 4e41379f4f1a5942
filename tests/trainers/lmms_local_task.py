"""For the tests that reach lmms-eval through EAGLE_TEST_LMMS_PYTHON (the `lmms` extra's interpreter,
which .ci/run builds): run_check runs a check script under it (test side), and local_task builds an
lmms-eval task over synthetic benchmark items (check side: the scripts load this file by path, since
latex2sympy2's `tests` package shadows this repository's there)."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

UTILS = '''def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''


def lmms_python() -> str:
    """The interpreter with the `lmms` extra; the calling test skips without it."""
    import pytest

    python = os.environ.get("EAGLE_TEST_LMMS_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("EAGLE_TEST_LMMS_PYTHON (an interpreter with the lmms extra) is not set; .ci/run sets it")
    return python


def run_check(script: str, *args) -> dict:
    """tests/trainers/`script` under the lmms interpreter: the JSON object it prints last."""
    proc = subprocess.run([lmms_python(), str(HERE / script), *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_task(task_dir: Path, name: str, dataset_path, dataset_kwargs: str = "{load_from_disk: true}") -> Path:
    """The generate_until task `name` (exact match, case and punctuation ignored) in `task_dir`."""
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "utils.py").write_text(UTILS)
    (task_dir / f"{name}.yaml").write_text(textwrap.dedent(f"""\
        task: {name}
        dataset_path: {dataset_path}
        dataset_kwargs: {dataset_kwargs}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_target: answer
        generation_kwargs: {{max_new_tokens: 4, until: ["ASSISTANT:"]}}
        metric_list:
          - {{metric: exact_match, aggregation: mean, higher_is_better: true, ignore_case: true, ignore_punctuation: true}}
        """))
    return task_dir


def local_task(tmp: Path, items, name: str = "eagle_tiny_gqa") -> Path:
    """`items` as a DatasetDict saved to <tmp>/data (read with load_from_disk) and the task `name`
    over it in <tmp>/tasks, returned (an include path)."""
    import datasets

    rows = {"question_id": [it.qid for it in items], "question": [it.prompt for it in items],
            "answer": [str(it.answer) for it in items], "image": [it.load_image() for it in items]}
    data = datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())})
    data.save_to_disk(str(tmp / "data"))
    return write_task(tmp / "tasks", name, tmp / "data")
