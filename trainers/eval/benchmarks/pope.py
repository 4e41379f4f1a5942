"""POPE (COCO): random, popular and adversarial splits.

Layout (the official POPE release, as LLaVA-1.5 uses it):
    <root>/coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json
        one JSON object per line: {"question_id", "image", "text", "label": "yes"|"no"}
    <root>/images/<image>          (COCO val2014 images)
Prompt (LLaVA-1.5): "<text>\\nAnswer the question using a single word or phrase." (see
base.short_answer_prompt)
Score (the POPE evaluation): keep the first sentence of the answer, drop commas, split on spaces;
"No"/"no"/"not" among the words -> no, else yes. Per split: accuracy, precision, recall, F1 and
yes-ratio (yes = positive). Headline "pope" = mean F1 over the splits (x100), as LLaVA-1.5 reports.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainers.eval.base import (Benchmark, BenchmarkDataError, EvalItem, field_of, read_jsonl,
                                require_dir, require_file, short_answer_prompt)

SPLITS = ("random", "popular", "adversarial")


def parse_yes_no(text: str) -> str:
    """POPE's answer parsing."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "no" in words or "not" in words) else "yes"


def binary_metrics(preds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1, yes-ratio with "yes" as the positive class (fractions)."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, labels))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, labels))
    tn = sum(p == "no" and g == "no" for p, g in zip(preds, labels))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(labels), "precision": precision, "recall": recall,
            "f1": f1, "yes_ratio": (tp + fp) / len(labels)}


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
        return float(parse_yes_no(prediction) == item.answer)

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        self.check_lengths(items, predictions)
        out: dict[str, float] = {}
        f1s = []
        for split in SPLITS:
            pairs = [(parse_yes_no(p), i.answer) for i, p in zip(items, predictions)
                     if i.meta["split"] == split]
            if not pairs:
                continue
            metrics = binary_metrics([p for p, _ in pairs], [g for _, g in pairs])
            for key, value in metrics.items():
                out[f"{self.name}/{split}/{key}"] = 100.0 * value
            f1s.append(metrics["f1"])
        out[self.name] = 100.0 * sum(f1s) / len(f1s)
        return out
