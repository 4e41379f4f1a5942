"""ScienceQA-IMG: the test questions that come with an image.

Layout (the official ScienceQA release):
    <root>/problems.json      {pid: {"question", "choices": [...], "answer": int, "hint", "image",
                                     "split", ...}}
    <root>/pid_splits.json    {"test": [pid, ...], ...}
    <root>/images/test/<pid>/<image>
Prompt (LLaVA-1.5): "Context: <hint>\\n" (when there is a hint) + "<question>\\nA. ..\\nB. ..\\n"
"Answer with the option's letter from the given choices directly."
Score: accuracy (x100) of the option parsed by the profile's rule (parse_choice); an answer that
names no option is wrong.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from trainers.data.prompts import OPTION_LETTERS, multiple_choice_question
from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_json,
                                require_file)

OFFICIAL_LETTERS = tuple("ABCDE")  # eval_science_qa.py's --options default (a list: exact members)
# "." is any character, as officially written: "The answer is B" at the very end does not match,
# "The answer is Blue." matches B.
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_choice(prediction: str, n_options: int, profile: str) -> int | None:
    """The index of the option an answer picks, or None.

    official (LLaVA's llava/eval/eval_science_qa.py), on the text as it is: exactly one of the
    letters A-E; else a letter in A-E followed by ". " ("B. dog"); else "The answer is X" plus any
    one character, found exactly once ("The answer is A. The answer is B." picks nothing); then
    a letter beyond the question's options is wrong. No lower case, no brackets, no option text.
    lmms_eval (tasks/scienceqa/utils.py), on the stripped text: the letter alone in either case
    ("b"), or an upper-case letter followed by "." ("B.", "B.dog")."""
    letter: str | None = None
    if profile == "lmms_eval":
        text = prediction.strip()
        if len(text) == 1:
            letter = text.upper()
        elif len(text) >= 2 and text[0].isupper() and text[1] == ".":
            letter = text[0]
    elif prediction in OFFICIAL_LETTERS:
        letter = prediction
    elif len(prediction) >= 3 and prediction[0] in OFFICIAL_LETTERS and prediction[1:3] == ". ":
        letter = prediction[0]
    else:
        found = _ANSWER_IS.findall(prediction)
        letter = found[0] if len(found) == 1 else None
    letters = list(OPTION_LETTERS[:n_options] if profile == "lmms_eval" else OFFICIAL_LETTERS[:n_options])
    return letters.index(letter) if letter in letters else None


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
        idx = parse_choice(prediction, len(item.meta["options"]), self.profile)
        return float(idx is not None and OPTION_LETTERS[idx] == item.answer)

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        correct = sum(self.score_item(i, p) for i, p in zip(items, predictions))
        return {self.name: 100.0 * correct / len(items)}
