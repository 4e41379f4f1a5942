"""MME (perception and cognition).

Layout (the official MME_Benchmark_release_version folder), one folder per subtask, either
    <root>/<subtask>/images/<name>.{jpg,png} + <root>/<subtask>/questions_answers_YES_or_NO/<name>.txt
or flat
    <root>/<subtask>/<name>.{jpg,png} + <root>/<subtask>/<name>.txt
where each .txt holds one "question<TAB>Yes|No" line per question (two per image).
Subtask folders present are loaded (a partial copy is scored on what is there, with a warning).
Prompt (LLaVA-1.5): MME's own " Please answer yes or no." is replaced by
"\\nAnswer the question using a single word or phrase."
Score, profile "official" (LLaVA's convert_answer_to_mme.py writes the answer as it is, MME's
eval_tool/calculation.py parses it): lower-cased only; exactly "yes"/"no", else "yes" searched in
its first 4 characters, then "no", else "other" (". yes" and "y" are other; "not sure" is no). An
answer holding a tab or newline breaks the official .txt line format; it is scored here as one
field. Profile "lmms_eval" (tasks/mme/utils.py): lower-cased, stripped and every "." removed first;
a one-character answer "y"/"n" is yes/no (any other single character is other); then as official.
Both: per subtask acc (per question) and acc+ (per image: every question right), each x100, summed;
perception = sum over the 10 perception subtasks (max 2000), cognition over the 4 cognition ones
(max 800). "mme" = perception.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from trainers.data.prompts import YES_NO_SUFFIX, short_answer_question
from trainers.eval.base import Benchmark, BenchmarkDataError, EvalItem

logger = logging.getLogger(__name__)

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
IMAGE_EXTS = (".jpg", ".png", ".jpeg")


def parse_mme_answer(text: str, profile: str) -> str:
    text = text.lower()
    if profile == "lmms_eval":
        text = text.strip().replace(".", "")
        if len(text) == 1:
            return {"y": "yes", "n": "no"}.get(text, "other")
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def mme_prompt(question: str) -> str:
    q = question.strip()
    q = q[: -len(YES_NO_SUFFIX)].rstrip() if q.endswith(YES_NO_SUFFIX) else q
    return short_answer_question(q)


def _find_image(folder: Path, stem: str, txt: Path) -> Path:
    for ext in IMAGE_EXTS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    raise BenchmarkDataError(f"mme: {txt}: no image {stem}{{{','.join(IMAGE_EXTS)}}} in {folder}")


class MME(Benchmark):
    name = "mme"
    layout = "official release: <subtask>/[images/ + questions_answers_YES_or_NO/ | flat] .txt + images"

    def load(self, root: Path) -> list[EvalItem]:
        if not root.is_dir():
            raise BenchmarkDataError(f"{self.name}: missing benchmark folder: looked for directory {root}")
        present = [t for t in PERCEPTION + COGNITION if (root / t).is_dir()]
        if not present:
            raise BenchmarkDataError(
                f"{self.name}: no subtask folders ({', '.join(PERCEPTION + COGNITION)}) in {root}")
        missing = [t for t in PERCEPTION if t not in present]
        if missing:
            logger.warning("mme: perception subtasks missing from %s: %s (scored on the rest)",
                           root, ", ".join(missing))
        items = []
        for task in present:
            folder = root / task
            if (folder / "questions_answers_YES_or_NO").is_dir():
                txt_dir, img_dir = folder / "questions_answers_YES_or_NO", folder / "images"
            else:
                txt_dir, img_dir = folder, folder
            for txt in sorted(txt_dir.glob("*.txt")):
                image = _find_image(img_dir, txt.stem, txt)
                for lineno, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
                    if not line.strip():
                        continue
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) != 2 or parts[1].strip().lower() not in ("yes", "no"):
                        raise BenchmarkDataError(f"{txt}: line {lineno}: expected 'question<TAB>Yes|No'")
                    items.append(EvalItem(
                        qid=f"{task}/{txt.stem}/{lineno}", image=str(image),
                        prompt=mme_prompt(parts[0]),
                        answer=parts[1].strip().lower(), meta={"task": task, "image_id": txt.stem}))
        return items

    def group_key(self, item: EvalItem) -> str:
        return f"{item.meta['task']}/{item.meta['image_id']}"

    def score_item(self, item: EvalItem, prediction: str) -> float:
        return float(parse_mme_answer(prediction, self.profile) == item.answer)

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        per_task: dict[str, list[float]] = {}
        per_image: dict[str, list[float]] = {}
        for item, pred in zip(items, predictions):
            ok = self.score_item(item, pred)
            per_task.setdefault(item.meta["task"], []).append(ok)
            per_image.setdefault(self.group_key(item), []).append(ok)
        out: dict[str, float] = {}
        for task, oks in per_task.items():
            images = [v for k, v in per_image.items() if k.split("/", 1)[0] == task]
            acc = 100.0 * sum(oks) / len(oks)
            acc_plus = 100.0 * sum(all(v) for v in images) / len(images)
            out[f"{self.name}/{task}/acc"] = acc
            out[f"{self.name}/{task}/acc_plus"] = acc_plus
            out[f"{self.name}/{task}"] = acc + acc_plus
        out[f"{self.name}/perception"] = sum(out.get(f"{self.name}/{t}", 0.0) for t in PERCEPTION)
        out[f"{self.name}/cognition"] = sum(out.get(f"{self.name}/{t}", 0.0) for t in COGNITION)
        out[self.name] = out[f"{self.name}/perception"]
        return out
