"""TextVQA val.

Layout (the official TextVQA 0.5.1 release):
    <root>/TextVQA_0.5.1_val.json   {"data": [{"question_id", "question", "image_id",
                                               "answers": [10 strings], ...}, ...]}
    <root>/train_images/<image_id>.jpg   (val images ship in the train_images folder)
    <root>/TextVQA_Rosetta_OCR_v0.2_val.json   optional {"data": [{"image_id", "ocr_tokens"}]}
Prompt (LLaVA-1.5): "<question>\\nAnswer the question using a single word or phrase." (see
base.short_answer_prompt); when the Rosetta OCR file is present, LLaVA-1.5's
"\\nReference OCR token: tok1, tok2, ..." line goes between question and suffix, as in its
llava_textvqa_val_v051_ocr.jsonl (the numbers LLaVA-1.5-based papers report).
Score (both profiles: lmms-eval runs the same processor and formula): VQA accuracy, min(#matching
humans / 3, 1) averaged over the 10 leave-one-out subsets of the answers, with the official VQA
normalisation (see trainers/eval/normalize.py), x100.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_json,
                                require_dir, require_file, short_answer_prompt)
from trainers.eval.normalize import vqa_accuracy

QUESTIONS_FILE = "TextVQA_0.5.1_val.json"
IMAGE_DIR = "train_images"
OCR_FILE = "TextVQA_Rosetta_OCR_v0.2_val.json"


def _ocr_tokens(root: Path) -> dict[str, list[str]]:
    path = root / OCR_FILE
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise BenchmarkDataError(f"{path}: expected an object with a \"data\" list")
    out = {}
    for n, rec in enumerate(data["data"]):
        where = f"{path}: data[{n}]"
        if not isinstance(rec, dict):
            raise BenchmarkDataError(f"{where}: expected an object")
        out[str(field_of(rec, "image_id", where, str))] = [str(t) for t in field_of(rec, "ocr_tokens", where, list)]
    return out


class TextVQA(Benchmark):
    name = "textvqa"
    layout = f"official release: {QUESTIONS_FILE} + {IMAGE_DIR}/<image_id>.jpg"

    def load(self, root: Path) -> list[EvalItem]:
        path = require_file(self.name, root / QUESTIONS_FILE, "questions file")
        images = require_dir(self.name, root / IMAGE_DIR, "image folder")
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise BenchmarkDataError(f"{path}: expected an object with a \"data\" list")
        ocr = _ocr_tokens(root)
        items = []
        for n, rec in enumerate(data["data"]):
            where = f"{path}: data[{n}]"
            if not isinstance(rec, dict):
                raise BenchmarkDataError(f"{where}: expected an object")
            qid = field_of(rec, "question_id", where, (int, str))
            answers = field_of(rec, "answers", where, list)
            if not answers or not all(isinstance(a, str) for a in answers):
                raise BenchmarkDataError(f"{where}: field 'answers' must be a non-empty list of strings")
            image_id = field_of(rec, "image_id", where, str)
            question = field_of(rec, "question", where, str)
            if ocr.get(image_id):
                question = f"{question}\nReference OCR token: {', '.join(ocr[image_id])}"
            items.append(EvalItem(qid=str(qid), image=str(images / f"{image_id}.jpg"),
                                  prompt=short_answer_prompt(question), answer=answers))
        return items

    def score_item(self, item: EvalItem, prediction: str) -> float:
        return vqa_accuracy(prediction, item.answer)

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        total = sum(self.score_item(i, p) for i, p in zip(items, predictions))
        return {self.name: 100.0 * total / len(items)}
