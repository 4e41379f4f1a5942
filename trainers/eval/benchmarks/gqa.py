"""GQA testdev-balanced.

Layout (the official GQA release):
    <root>/testdev_balanced_questions.json   {question_id: {"imageId", "question", "answer", ...}}
    <root>/images/<imageId>.jpg
Prompt (LLaVA-1.5): "<question>\\nAnswer the question using a single word or phrase." (see
base.short_answer_prompt)
Score: exact match after the normalisation LLaVA applies before the official GQA script (strip,
lower-case, drop trailing periods); no article or number-word rewriting (GQA's script has none).
Like the official script, accuracy is also broken down by the questions' structural and semantic
types ("types" in the questions file), as gqa/structural/<type> and gqa/semantic/<type>.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_json,
                                require_dir, require_file, short_answer_prompt)

QUESTIONS_FILE = "testdev_balanced_questions.json"
TYPE_GROUPS = ("structural", "semantic")


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
            types = rec.get("types")
            types = types if isinstance(types, dict) else {}
            meta = {k: types[k] for k in TYPE_GROUPS if isinstance(types.get(k), str)}
            items.append(EvalItem(qid=str(qid), image=str(images / f"{image_id}.jpg"),
                                  prompt=short_answer_prompt(question), answer=answer, meta=meta))
        return items

    def score_item(self, item: EvalItem, prediction: str) -> float:
        return float(normalize_gqa_answer(prediction) == normalize_gqa_answer(item.answer))

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        scores = [self.score_item(i, p) for i, p in zip(items, predictions)]
        out = {self.name: 100.0 * sum(scores) / len(items)}
        for group in TYPE_GROUPS:
            by_type: dict[str, list[float]] = defaultdict(list)
            for it, s in zip(items, scores):
                if group in it.meta:
                    by_type[it.meta[group]].append(s)
            for name, values in sorted(by_type.items()):
                out[f"{self.name}/{group}/{name}"] = 100.0 * sum(values) / len(values)
        return out
