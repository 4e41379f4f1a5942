"""Scorer agreement: on the same answers, the project's scorers (profile "lmms_eval") against
lmms-eval's own task code, for the seven benchmarks. Each benchmark's questions and answers come
from benchmarks/lmms_agreement_panel.py. lmms-eval's side is its real task: the registered task's
config, with its dataset pointed at those documents on disk, then ConfigurableTask.process_results
per answer (lmms-eval strips the answer there) and the task's own aggregation for the headline.
Per answer, the two per-item scores must be equal; every disagreement is listed.

Needs the `lmms` extra: `python -m benchmarks.lmms_agreement [--out FILE]`, run with the
interpreter that has it (CI: $EAGLE_TEST_LMMS_PYTHON). Writes benchmarks/results/lmms_agreement.json
and prints one JSON line."""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import random
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.lmms_agreement_panel import TASKS, panel, to_item
from trainers.data.prompts import OPTION_LETTERS
from trainers.eval.benchmarks import get_benchmark
from trainers.eval.benchmarks.mmmu_parse import multi_choice_candidates

OUT = Path(__file__).resolve().parent / "results" / "lmms_agreement.json"
# headline metric of each task, and its scale against the project's headline
HEADLINE = {"gqa": ("exact_match", 100.0), "textvqa": ("exact_match", 100.0), "scienceqa_img": ("exact_match", 100.0),
            "pope": ("pope_f1_score", 100.0), "mme": ("mme_perception_score", 1.0), "mmmu": ("mmmu_acc", 100.0),
            "ocrbench": ("ocrbench_accuracy", None)}  # None: counts, see _ocrbench_count
TOL = 1e-9
HEADLINE_TOL = {"mmmu": 5e-4}  # lmms-eval rounds MMMU's accuracy to 5 decimals


def _guess(bench: str, item, answer: str) -> bool:
    """An MMMU choice answer that names no option: both scorers pick one at random (lmms-eval from
    its global generator, the project from one seeded by the question), so they may differ."""
    if bench != "mmmu" or item.meta["type"] != "multiple-choice":
        return False
    letters = list(OPTION_LETTERS[: len(item.meta["options"])])
    return not multi_choice_candidates(answer.strip(), letters, dict(zip(letters, item.meta["options"])), loose=True)[0]


def _item_score(bench: str, result: dict[str, Any]) -> float:
    """lmms-eval's per-item score in its process_results output."""
    if bench in ("gqa", "textvqa", "scienceqa_img"):
        return float(result["exact_match"])
    if bench == "pope":
        return float(result["pope_accuracy"]["score"])
    if bench == "mme":
        return float(next(iter(result.values()))["score"])
    if bench == "ocrbench":
        return float(result["ocrbench_accuracy"]["score"])
    from lmms_eval.tasks.mmmu.utils import evaluate_mmmu  # the judge its aggregation runs

    sample = result["mmmu_acc"]
    judged, _ = evaluate_mmmu([sample])
    return float(judged[sample["id"]] == "Correct")


def _task(bench: str, docs: list[dict], root: Path):
    """lmms-eval's registered task, reading `docs` from disk (its process_docs, which fetches images
    from the hub, dropped: no image is read for scoring)."""
    import datasets
    from lmms_eval.api.task import ConfigurableTask
    from trainers.eval.lmms_harness import _manager

    config = dict(_manager(None)._get_config(TASKS[bench]))
    split = config.get("test_split") or config.get("validation_split")
    path = root / bench
    datasets.DatasetDict({split: datasets.Dataset.from_list(docs)}).save_to_disk(str(path))
    config.update(dataset_path=str(path), dataset_name=None, dataset_kwargs={"load_from_disk": True})
    config.pop("process_docs", None)
    return ConfigurableTask(config=config)


def _pairs(bench: str) -> tuple[list[dict], list[str]]:
    """One document per (question, answer), marked with the answer's index so that MME's image
    pairs (and the pooled headline) group by answer style."""
    docs, preds = [], []
    for n, (doc, answers) in enumerate(panel(bench)):
        for k, answer in enumerate(answers):
            d = copy.deepcopy(doc)
            d["_n"] = n
            if bench in ("pope", "mme"):
                d["question_id"] = f"{d['question_id']}#{k}"
            docs.append(d)
            preds.append(answer)
    return docs, preds


def _aggregate(task, metric: str, values: list, out_dir: Path) -> float:
    fn = task.aggregation()[metric]
    kwargs = {"args": SimpleNamespace(output_path=str(out_dir))} if "args" in inspect.signature(fn).parameters else {}
    return float(fn(values, **kwargs))


def score_benchmark(bench: str, root: Path) -> dict[str, Any]:
    random.seed(0)  # as simple_evaluate seeds it (random_seed=0): the guesses repeat
    docs, preds = _pairs(bench)
    task = _task(bench, docs, root)
    ours = get_benchmark(bench, profile="lmms_eval")
    items = [to_item(bench, d["_n"], {k: v for k, v in d.items() if k != "_n"}) for d in docs]
    for i, (item, d) in enumerate(zip(items, docs)):
        item.qid = f"{item.qid}#{i}"
        if bench == "mme":  # acc+ pairs: the two questions of one image, answered in one style
            item.meta["image_id"] = d["question_id"]
    metric, scale = HEADLINE[bench]
    disagreements, values, agree = [], [], 0
    for item, doc, pred in zip(items, docs, preds):
        result = task.process_results(copy.deepcopy(doc), [pred])
        theirs, mine = _item_score(bench, result), ours.score_item(item, pred)
        if bench != "mme" or metric in result:
            values.append(result[metric] if metric in result else result)
        if abs(theirs - mine) <= TOL:
            agree += 1
        else:
            disagreements.append({"question": doc["_n"], "gold": item.answer, "answer": pred,
                                  "builtin": mine, "lmms_eval": theirs, "random_guess": _guess(bench, item, pred)})
    summary = ours.summarize(items, preds)
    if scale is None:  # lmms-eval returns the count / 1000; the project the count on a 1000 scale
        theirs_head, mine_head = _aggregate(task, metric, values, root) * 1000, summary[bench] * len(items) / 1000
    else:
        theirs_head, mine_head = _aggregate(task, metric, values, root) * scale, summary[f"{bench}/perception"
                                                                                         if bench == "mme" else bench]
    rules = sum(not d["random_guess"] for d in disagreements)
    return {"task": TASKS[bench], "questions": len(panel(bench)), "answers": len(preds), "agree": agree,
            "agreement": round(agree / len(preds), 4), "rule_disagreements": rules,
            "headline": {"metric": metric, "builtin": round(mine_head, 6), "lmms_eval": round(theirs_head, 6)},
            "headline_equal": abs(mine_head - theirs_head) <= HEADLINE_TOL.get(bench, 1e-6),
            "disagreements": disagreements}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from trainers.eval.lmms_harness import HarnessError, check_installed

    try:
        check_installed()
    except HarnessError as err:
        print(f"lmms_agreement: {err}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        per = {bench: score_benchmark(bench, Path(tmp)) for bench in TASKS}
    total = sum(r["answers"] for r in per.values())
    agree = sum(r["agree"] for r in per.values())
    figures = {"benchmark": "lmms_agreement", "lmms_eval_version": version("lmms_eval"), "profile": "lmms_eval",
               "answers": total, "agree": agree, "agreement": round(agree / total, 4),
               "rule_disagreements": sum(r["rule_disagreements"] for r in per.values()),
               "random_guess_disagreements": sum(len(r["disagreements"]) - r["rule_disagreements"] for r in per.values()),
               "headlines_equal": all(r["headline_equal"] for r in per.values()), "benchmarks": per}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "benchmarks"}
                     | {b: r["agreement"] for b, r in per.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
