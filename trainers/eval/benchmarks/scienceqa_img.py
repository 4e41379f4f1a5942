"""ScienceQA-IMG: the test questions that come with an image.

Layout (the official ScienceQA release):
    <root>/problems.json      {pid: {"question", "choices": [...], "answer": int, "hint", "image",
                                     "split", ...}}
    <root>/pid_splits.json    {"test": [pid, ...], ...}
    <root>/images/test/<pid>/<image>
Prompt (LLaVA-1.5): "Context: <hint>\\n" (when there is a hint) + "<question>\\nA. ..\\nB. ..\\n"
"Answer with the option's letter from the given choices directly."
Score: accuracy (x100) of the parsed option; an answer that names no option is wrong.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from trainers.data.prompts import OPTION_LETTERS, multiple_choice_question
from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_json,
                                require_file)

_LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:\)|\.|:|$)(?:\s|$)")
_ANSWER_IS = re.compile(r"(?i:answer is):?\s*\(?([A-Z])(?![\w'])")
_BRACKETED = re.compile(r"\(([A-Z])\)")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_choice(prediction: str, options: Sequence[str]) -> int | None:
    """The option index an answer names, or None: "B" (or a lone "b"), "(B)", "B.", "B) ...",
    "The answer is B", a single "(B)" in prose, or the text of exactly one option."""
    letters = OPTION_LETTERS[: len(options)]
    text = prediction.strip()
    bare = text.strip("().:").strip()
    if len(bare) == 1 and bare.upper() in letters:  # "b" / "(b)": lower-casing tokenizers decode so
        return letters.index(bare.upper())
    m = _LEADING_LETTER.match(text)
    if m and m.group(1) in letters:
        return letters.index(m.group(1))
    m = _ANSWER_IS.search(text)
    if m and m.group(1) in letters:
        return letters.index(m.group(1))
    bracketed = {c for c in _BRACKETED.findall(text) if c in letters}
    if len(bracketed) == 1:
        return letters.index(bracketed.pop())
    norm = _norm(text)
    norms = [_norm(o) for o in options]
    if norm in norms and norms.count(norm) == 1:
        return norms.index(norm)
    found = [i for i, o in enumerate(norms) if o and re.search(rf"\b{re.escape(o)}\b", norm)]
    # Options that are parts of other found options ("red" in "dark red") do not count.
    found = [i for i in found if not any(j != i and norms[i] in norms[j] for j in found)]
    return found[0] if len(found) == 1 else None


class ScienceQAImg(Benchmark):
    name = "scienceqa_img"
    layout = "official release: problems.json + pid_splits.json + images/test/<pid>/<image>"

    def load(self, root: Path) -> list[EvalItem]:
        problems_path = require_file(self.name, root / "problems.json", "problems file")
        splits_path = require_file(self.name, root / "pid_splits.json", "split file")
        problems, splits = read_json(problems_path), read_json(splits_path)
        if not isinstance(problems, dict):
            raise BenchmarkDataError(f"{problems_path}: expected an object keyed by problem id")
        if not isinstance(splits, dict) or not isinstance(splits.get("test"), list):
            raise BenchmarkDataError(f"{splits_path}: expected an object with a \"test\" list")
        items = []
        for pid in splits["test"]:
            pid = str(pid)
            if pid not in problems:
                raise BenchmarkDataError(f"{splits_path}: test problem {pid} is not in {problems_path}")
            rec, where = problems[pid], f"{problems_path}: problem {pid}"
            if not isinstance(rec, dict):
                raise BenchmarkDataError(f"{where}: expected an object")
            if not rec.get("image"):
                continue  # ScienceQA-IMG: image questions only
            choices = field_of(rec, "choices", where, list)
            answer = field_of(rec, "answer", where, int)
            if not 2 <= len(choices) <= len(OPTION_LETTERS) or not 0 <= answer < len(choices):
                raise BenchmarkDataError(f"{where}: answer {answer} does not index choices {choices}")
            question = field_of(rec, "question", where, str)
            hint = (rec.get("hint") or "").strip()
            if hint:
                question = f"Context: {hint}\n{question}"
            items.append(EvalItem(
                qid=pid, image=str(root / "images" / "test" / pid / str(rec["image"])),
                prompt=multiple_choice_question(question, [str(c) for c in choices]),
                answer=OPTION_LETTERS[answer], meta={"options": [str(c) for c in choices]}))
        return items

    def score_item(self, item: EvalItem, prediction: str) -> float:
        idx = parse_choice(prediction, item.meta["options"])
        return float(idx is not None and OPTION_LETTERS[idx] == item.answer)

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        correct = sum(self.score_item(i, p) for i, p in zip(items, predictions))
        return {self.name: 100.0 * correct / len(items)}
