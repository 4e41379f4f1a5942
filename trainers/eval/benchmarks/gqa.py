"""GQA testdev-balanced.

Layout (the official GQA release):
    <root>/testdev_balanced_questions.json   {question_id: {"imageId", "question", "answer", ...}}
    <root>/images/<imageId>.jpg
Prompt (LLaVA-1.5): "<question>\\nAnswer the question using a single word or phrase." (see
base.short_answer_prompt)
Score: exact match after the normalisation LLaVA applies before the official GQA script (strip,
lower-case, drop trailing periods); no article or number-word rewriting (GQA's script has none).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_json,
                                require_dir, require_file, short_answer_prompt)

QUESTIONS_FILE = "testdev_balanced_questions.json"


def normalize_gqa_answer(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


class GQA(Benchmark):
    name = "gqa"
    layout = f"official release: {QUESTIONS_FILE} + images/<imageId>.jpg"

    def load(self, root: Path) -> list[EvalItem]:
        path = require_file(self.name, root / QUESTIONS_FILE, "questions file")
        images = require_dir(self.name, root / "images", "image folder")
        data = read_json(path)
        if not isinstance(data, dict):
            raise BenchmarkDataError(f"{path}: expected an object keyed by question id")
        items = []
        for qid, rec in data.items():
            where = f"{path}: question {qid}"
            if not isinstance(rec, dict):
                raise BenchmarkDataError(f"{where}: expected an object")
            image_id = field_of(rec, "imageId", where, str)
            question = field_of(rec, "question", where, str)
            answer = field_of(rec, "answer", where, str)
            items.append(EvalItem(qid=str(qid), image=str(images / f"{image_id}.jpg"),
                                  prompt=short_answer_prompt(question), answer=answer))
        return items

    def score_item(self, item: EvalItem, prediction: str) -> float:
        return float(normalize_gqa_answer(prediction) == normalize_gqa_answer(item.answer))

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        correct = sum(self.score_item(i, p) for i, p in zip(items, predictions))
        return {self.name: 100.0 * correct / len(items)}
