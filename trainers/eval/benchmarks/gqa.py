"""GQA testdev-balanced.

Layout (the official GQA release):
    <root>/testdev_balanced_questions.json   {question_id: {"imageId", "question", "answer", ...}}
    <root>/images/<imageId>.jpg
Prompt (LLaVA-1.5): "<question>\\nAnswer the question using a single word or phrase." (see
base.short_answer_prompt)
Score, profile "official" (what LLaVA-1.5 ran): scripts/convert_gqa_for_eval.py writes
text.rstrip(".").lower() and GQA's eval.py compares it to the question's answer as it is
(predicted == gold): no strip, no whitespace collapse, no article or number-word rewriting, so
"yes ." and "traffic  light" are wrong. Profile "lmms_eval" (tasks/gqa, exact_match with
ignore_case and ignore_punctuation): the prediction stripped (as lmms-eval strips every generated
answer), both sides lower-cased and every string.punctuation character deleted, then compared
("yes." and "yes" match; "yes ." keeps its space and does not).
Like the official script, accuracy is also broken down by the questions' structural and semantic
types ("types" in the questions file), as gqa/structural/<type> and gqa/semantic/<type>.
"""
from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_json,
                                require_dir, require_file, short_answer_prompt)

QUESTIONS_FILE = "testdev_balanced_questions.json"
TYPE_GROUPS = ("structural", "semantic")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def gqa_match(prediction: str, answer: str, profile: str) -> bool:
    if profile == "lmms_eval":
        return prediction.strip().lower().translate(_NO_PUNCTUATION) == answer.lower().translate(_NO_PUNCTUATION)
    return prediction.rstrip(".").lower() == answer


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
        return float(gqa_match(prediction, item.answer, self.profile))

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
