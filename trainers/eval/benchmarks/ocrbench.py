"""OCRBench.

Layout (the official OCRBench release):
    <root>/OCRBench.json   [{"id", "dataset_name", "question", "answers": str | [str], "type",
                             "image_path"}, ...]
    <root>/OCRBench_Images/<image_path>
Prompt: the question as given (the official evaluation adds no suffix).
Score, profile "official" (MultimodalOCR's OCRBench/example.py): an answer is right when one ground
truth is a substring of it, both lower-cased, stripped, then newlines turned into spaces; for the
handwritten-formula set (HME100k) both are stripped, newlines turned into spaces and then every
space removed - tabs and other whitespace inside stay - and case is kept. Profile "lmms_eval"
(tasks/ocrbench/utils.py): the same, after full-width ASCII (U+FF01-FF5E) and the ideographic
space are folded to ASCII outside HME100k. Both: "ocrbench" = right answers on the 1000-question scale
(count x 1000 / #questions, which is the plain count on the full set); "ocrbench/<type>" = counts.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_json,
                                require_dir, require_file)

QUESTIONS_FILE = "OCRBench.json"
IMAGE_DIR = "OCRBench_Images"
FORMULA_SETS = ("HME100k",)
# lmms-eval's fold: full-width "！".."～" to "!".."~", the ideographic space to a space; nothing else
_FULL_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def _formula(text: str) -> str:
    return text.strip().replace("\n", " ").replace(" ", "")


def _text(text: str, profile: str) -> str:
    if profile == "lmms_eval":
        text = text.translate(_FULL_WIDTH)
    return text.lower().strip().replace("\n", " ")


def ocrbench_match(prediction: str, answers: Sequence[str], dataset_name: str, profile: str) -> bool:
    if dataset_name in FORMULA_SETS:
        return any(_formula(a) in _formula(prediction) for a in answers)
    return any(_text(a, profile) in _text(prediction, profile) for a in answers)


class OCRBench(Benchmark):
    name = "ocrbench"
    layout = f"official release: {QUESTIONS_FILE} + {IMAGE_DIR}/<image_path>"

    def load(self, root: Path) -> list[EvalItem]:
        path = require_file(self.name, root / QUESTIONS_FILE, "questions file")
        images = require_dir(self.name, root / IMAGE_DIR, "image folder")
        data = read_json(path)
        if not isinstance(data, list):
            raise BenchmarkDataError(f"{path}: expected a list of questions")
        items = []
        for n, rec in enumerate(data):
            where = f"{path}: record {n}"
            if not isinstance(rec, dict):
                raise BenchmarkDataError(f"{where}: expected an object")
            answers = field_of(rec, "answers", where, (str, list))
            answers = [answers] if isinstance(answers, str) else answers
            if not answers or not all(isinstance(a, str) for a in answers):
                raise BenchmarkDataError(f"{where}: field 'answers' must be a string or list of strings")
            rel = field_of(rec, "image_path", where, str).removeprefix("./").removeprefix(IMAGE_DIR + "/")
            items.append(EvalItem(
                qid=str(rec.get("id", n)), image=str(images / rel),
                prompt=field_of(rec, "question", where, str), answer=answers,
                meta={"dataset_name": field_of(rec, "dataset_name", where, str),
                      "type": field_of(rec, "type", where, str)}))
        return items

    def score_item(self, item: EvalItem, prediction: str) -> float:
        return float(ocrbench_match(prediction, item.answer, item.meta["dataset_name"], self.profile))

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        out: dict[str, float] = {}
        correct = 0.0
        for item, pred in zip(items, predictions):
            ok = self.score_item(item, pred)
            correct += ok
            key = f"{self.name}/{item.meta['type']}"
            out[key] = out.get(key, 0.0) + ok
        out[f"{self.name}/count"] = correct
        out[self.name] = correct * 1000.0 / len(items)
        return out
