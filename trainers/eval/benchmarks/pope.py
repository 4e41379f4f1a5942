"""POPE (COCO): random, popular and adversarial splits.

Layout (the official POPE release, as LLaVA-1.5 uses it):
    <root>/coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json
        one JSON object per line: {"question_id", "image", "text", "label": "yes"|"no"}
    <root>/images/<image>          (COCO val2014 images)
Prompt (LLaVA-1.5): "<text>\\nAnswer the question using a single word or phrase." (see
base.short_answer_prompt)
Score, profile "official" (LLaVA's llava/eval/eval_pope.py): keep the text before the first "."
(if any), drop commas, split on single spaces; "No", "no" or "not" among the words -> no, anything
else -> yes ("Nope" and "NO" are yes). Per split: accuracy, precision, recall, F1 and yes-ratio
(yes = positive; the official script divides by zero where we report 0). Headline "pope" = mean
F1 over the splits (x100), as LLaVA-1.5 reports.
Profile "lmms_eval" (tasks/pope/utils.py): the answer stripped and lower-cased must equal "yes" or
"no" exactly ("Yes, there is" is wrong both ways); precision counts only answers that are exactly
"yes", recall's misses only answers that are exactly "no" (so any other answer costs accuracy but
neither precision nor recall); its yes-ratio is that of the ground truth. Per split as for its
pope_random/pope_pop/pope_adv tasks; headline = F1 over all items pooled (its "pope" task), x100.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_jsonl,
                                require_dir, require_file, short_answer_prompt)

SPLITS = ("random", "popular", "adversarial")


def parse_yes_no(text: str) -> str:
    """The official answer parsing."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "no" in words or "not" in words) else "yes"


def binary_metrics(preds: Sequence[str], labels: Sequence[str], yes_ratio_of_labels: bool = False) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio with "yes" as the positive class (fractions).
    A prediction that is neither "yes" nor "no" (lmms-eval's raw answers) is wrong, yet counts as
    neither a false positive nor a miss; lmms-eval's yes-ratio is that of the labels."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, labels))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, labels))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    yes = labels if yes_ratio_of_labels else preds
    return {"accuracy": sum(p == g for p, g in zip(preds, labels)) / len(labels), "precision": precision,
            "recall": recall, "f1": f1, "yes_ratio": sum(y == "yes" for y in yes) / len(labels),
            "f1_undefined": float(tp + fp == 0)}  # no yes answers: precision is 0/0, F1 0 by convention


class POPE(Benchmark):
    name = "pope"
    layout = "official release: coco_pope_{random,popular,adversarial}.json + images/"

    def load(self, root: Path) -> list[EvalItem]:
        images = require_dir(self.name, root / "images", "image folder")
        items = []
        for split in SPLITS:
            path = require_file(self.name, root / f"coco_pope_{split}.json", f"{split} split")
            for rec in read_jsonl(path):
                where = f"{path}: line {rec['__line__']}"
                label = field_of(rec, "label", where, str).strip().lower()
                if label not in ("yes", "no"):
                    raise BenchmarkDataError(f"{where}: label must be yes or no, got {label!r}")
                qid = field_of(rec, "question_id", where, (int, str))
                items.append(EvalItem(
                    qid=f"{split}/{qid}", image=str(images / field_of(rec, "image", where, str)),
                    prompt=short_answer_prompt(field_of(rec, "text", where, str)), answer=label,
                    meta={"split": split}))
        return items

    def score_item(self, item: EvalItem, prediction: str) -> float:
        if self.profile == "lmms_eval":
            return float(prediction.strip().lower() == item.answer)
        return float(parse_yes_no(prediction) == item.answer)

    def _metrics(self, preds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
        if self.profile == "lmms_eval":
            return binary_metrics([p.strip().lower() for p in preds], labels, yes_ratio_of_labels=True)
        return binary_metrics([parse_yes_no(p) for p in preds], labels)

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        out: dict[str, float] = {}
        f1s, undefined = [], 0.0
        for split in SPLITS:
            pairs = [(p, i.answer) for i, p in zip(items, predictions) if i.meta["split"] == split]
            if not pairs:
                continue
            metrics = self._metrics([p for p, _ in pairs], [g for _, g in pairs])
            undefined += metrics.pop("f1_undefined")
            for key, value in metrics.items():
                out[f"{self.name}/{split}/{key}"] = 100.0 * value
            f1s.append(metrics["f1"])
        if self.profile == "lmms_eval":
            pooled = self._metrics(predictions, [i.answer for i in items])
            f1s, undefined = [pooled["f1"]], pooled["f1_undefined"]
        out[self.name] = 100.0 * sum(f1s) / len(f1s)
        out[f"{self.name}/f1_undefined"] = undefined  # F1s (splits, or the pooled one) with no yes answers
        return out

    def undefined(self, summary: dict[str, float]) -> str | None:
        n = int(summary.get(f"{self.name}/f1_undefined", 0))
        return f"F1 undefined on {n} split(s): no yes answers (precision 0/0)" if n else None
