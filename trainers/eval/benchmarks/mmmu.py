"""MMMU validation.

Layout (the Hugging Face parquet release, MMMU/MMMU or lmms-lab/MMMU): every
    <root>/**/validation-*.parquet
under the folder is read with pyarrow; columns id, question, options (a Python-literal list),
answer, question_type ("multiple-choice" | "open"), image_1 ({"bytes", "path"}). As LLaVA-1.5 takes
one image, image_1 is used.
Prompt: multiple choice "<question>\\nA. ..\\nB. ..\\nAnswer with the option's letter from the given
choices directly."; open "<question>\\nAnswer the question using a single word or phrase."
Score: accuracy (x100) with MMMU's reference parsing (trainers/eval/benchmarks/mmmu_parse.py);
profile "lmms_eval" finds option letters more loosely, as lmms-eval does; open answers alike.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from trainers.data.prompts import OPTION_LETTERS, multiple_choice_question, short_answer_question
from trainers.eval.base import Benchmark, BenchmarkDataError, EvalItem
from trainers.eval.benchmarks.mmmu_parse import eval_open, parse_multi_choice, parse_open

COLUMNS = ("id", "question", "options", "answer", "question_type", "image_1")


def _literal_list(text: str, where: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise BenchmarkDataError(f"{where}: options is not a list literal: {text[:60]!r}") from None
    if not isinstance(value, list):
        raise BenchmarkDataError(f"{where}: options is not a list: {text[:60]!r}")
    return [str(v) for v in value]


def _gold(answer: str) -> str | list[str]:
    text = answer.strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
            if isinstance(value, list):
                return [str(v) for v in value]
        except (ValueError, SyntaxError):
            pass
    return text


class MMMU(Benchmark):
    name = "mmmu"
    layout = "Hugging Face parquet: **/validation-*.parquet (columns id, question, options, answer, ...)"

    def load(self, root: Path) -> list[EvalItem]:
        files = sorted(root.rglob("validation-*.parquet")) if root.is_dir() else []
        if not files:
            raise BenchmarkDataError(f"{self.name}: missing validation parquet files: looked for "
                                     f"{root}/**/validation-*.parquet")
        items = []
        for path in files:
            try:
                table = pq.read_table(path)
            except Exception as err:  # pyarrow raises several types for a broken file
                raise BenchmarkDataError(f"{path}: not a readable parquet file: {err}") from None
            missing = [c for c in COLUMNS if c not in table.column_names]
            if missing:
                raise BenchmarkDataError(f"{path}: missing columns {missing}")
            for n, rec in enumerate(table.select(list(COLUMNS)).to_pylist()):
                items.append(self._item(rec, f"{path}: row {n} (id {rec.get('id')})"))
        return items

    def _item(self, rec: dict, where: str) -> EvalItem:
        image = rec["image_1"]
        if not isinstance(image, dict) or not image.get("bytes"):
            raise BenchmarkDataError(f"{where}: image_1 has no image bytes")
        if not isinstance(rec["question"], str) or not isinstance(rec["answer"], str):
            raise BenchmarkDataError(f"{where}: question and answer must be strings")
        kind = rec["question_type"]
        if kind == "multiple-choice":
            options = _literal_list(rec["options"], where)
            if not 2 <= len(options) <= len(OPTION_LETTERS):
                raise BenchmarkDataError(f"{where}: {len(options)} options")
            prompt = multiple_choice_question(rec["question"], options)
        elif kind == "open":
            options, prompt = [], short_answer_question(rec["question"])
        else:
            raise BenchmarkDataError(f"{where}: question_type must be multiple-choice or open, got {kind!r}")
        return EvalItem(qid=str(rec["id"]), image=image["bytes"], prompt=prompt,
                        answer=_gold(rec["answer"]), meta={"type": kind, "options": options})

    def score_item(self, item: EvalItem, prediction: str) -> float:
        loose = self.profile == "lmms_eval"
        if loose:  # lmms-eval strips every generated answer before its task sees it
            prediction = prediction.strip()
        if item.meta["type"] == "multiple-choice":
            options = item.meta["options"]
            letters = list(OPTION_LETTERS[: len(options)])
            pred = parse_multi_choice(prediction, letters, dict(zip(letters, options)), item.qid, loose=loose)
            gold = item.answer
            return float(pred in gold if isinstance(gold, list) else pred == gold)
        return float(eval_open(item.answer, parse_open(prediction)))

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        correct = sum(self.score_item(i, p) for i, p in zip(items, predictions))
        return {self.name: 100.0 * correct / len(items)}
