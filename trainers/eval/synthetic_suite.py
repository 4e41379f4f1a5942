"""A synthetic evaluation suite written in the real benchmarks' file formats, so the same loaders and
official scorers run on it. Items come from trainers.data.synthetic.make_item (an independent
random stream per benchmark, not the SFT one) and keep the SFT questions' phrasing:

    gqa            attributes (colour, shape, count) and existence   official GQA json + images/
    textvqa        reading (word, number, table cell), 10 answers   TextVQA json + train_images/
    pope           existence, the three split files                  coco_pope_<split>.json + images/
    mme            existence, count, color: a yes and a no per image <subtask>/<name>.{png,txt}
    scienceqa_img  multiple choice over colour, shape, count, words problems.json + pid_splits.json
    ocrbench       word reading, the question as given               OCRBench.json + OCRBench_Images/
    mmmu           multiple choice (choice) and open reading (number) Synthetic/validation-*.parquet

MME keeps MME's scale: its existence, count and color subtasks are written, so the synthetic "mme"
is out of 600.
Its files hold MME's own "... Please answer yes or no." questions, which the MME loader turns into
LLaVA-1.5's short-answer prompt; POPE's text field holds the bare question, as the real files do.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from trainers.data.prompts import OPTION_LETTERS, SHORT_ANSWER_SUFFIX, yes_no_question
from trainers.data.synthetic import SyntheticItem, make_item
from trainers.data.synthetic_yesno import (
    colour_question,
    count_question,
    exists_question,
)
from trainers.eval.base import BenchmarkDataError
from trainers.eval.benchmarks.pope import SPLITS

logger = logging.getLogger(__name__)

SUITE_VERSION = 3  # bump when the suite's content changes, so cached suites are rewritten
MANIFEST = "suite.json"


def _strip_short_suffix(question: str) -> str:
    """Real GQA/TextVQA files hold the bare question; the loader adds the suffix back."""
    return question.removesuffix("\n" + SHORT_ANSWER_SUFFIX)


def _save(img, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        img.save(path, format="JPEG", quality=95, subsampling=0)
    else:
        img.save(path, format="PNG")
    return path.name


def _items(bench: str, seed: int, n: int, kinds: Sequence[str], image_size: int) -> list[SyntheticItem]:
    rng = random.Random(f"eagle-eval-suite:{bench}:{seed}")  # str seeds hash deterministically
    return [make_item(rng, kinds[i % len(kinds)], image_size) for i in range(n)]


def _write_gqa(root: Path, n: int, seed: int, size: int) -> None:
    questions = {}
    for i, it in enumerate(_items("gqa", seed, n, ("colour", "shape", "count", "exists"), size)):
        image_id = f"syn{i:05d}"
        _save(it.image, root / "images" / f"{image_id}.jpg")
        questions[f"{i:05d}"] = {"imageId": image_id, "question": _strip_short_suffix(it.question),
                                 "answer": it.answer, "fullAnswer": it.answer, "types": {"semantic": it.kind}}
    (root / "testdev_balanced_questions.json").write_text(json.dumps(questions, indent=1))


def _write_textvqa(root: Path, n: int, seed: int, size: int) -> None:
    data = []
    for i, it in enumerate(_items("textvqa", seed, n, ("word", "number", "cell"), size)):
        image_id = f"syn{i:05d}"
        _save(it.image, root / "train_images" / f"{image_id}.jpg")
        data.append({"question_id": i, "question": _strip_short_suffix(it.question), "image_id": image_id,
                     "answers": [it.answer] * 10, "set_name": "val"})
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "data": data}, indent=1))


def _write_pope(root: Path, n: int, seed: int, size: int) -> None:
    for split in SPLITS:
        lines = []
        for i, it in enumerate(_items(f"pope-{split}", seed, n, ("exists",), size)):
            name = _save(it.image, root / "images" / f"{split}_{i:05d}.jpg")
            lines.append(json.dumps({"question_id": i + 1, "image": name, "text": _strip_short_suffix(it.question), "label": it.answer}))
        (root / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")


# MME subtask -> (synthetic scene kind, the yes/no rule the SFT data also uses)
MME_TASKS = {"existence": ("exists", exists_question), "count": ("count", count_question),
             "color": ("colour", colour_question)}


def _write_mme(root: Path, n: int, seed: int, size: int) -> None:
    n_images = max(1, n // (2 * len(MME_TASKS)))  # MME asks two questions per image: one yes, one no
    for task, (kind, rule) in MME_TASKS.items():
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        for i, it in enumerate(_items(f"mme-{task}", seed, n_images, (kind,), size)):
            rng = random.Random(f"eagle-eval-suite:mme-pair:{task}:{seed}:{i}")
            yes_q, no_q = (yes_no_question(rule(it, yes, rng)) for yes in (True, False))  # one yes, one no
            name = f"syn{i:05d}"
            _save(it.image, folder / f"{name}.png")
            (folder / f"{name}.txt").write_text(f"{yes_q}\tYes\n{no_q}\tNo\n")


def _write_scienceqa(root: Path, n: int, seed: int, size: int) -> None:
    problems, test = {}, []
    for i, it in enumerate(_items("scienceqa_img", seed, n, ("choice",), size)):
        pid = str(10000 + i)
        _save(it.image, root / "images" / "test" / pid / "image.png")
        assert it.options is not None
        problems[pid] = {"question": it.question.split("\n", 1)[0], "choices": it.options,
                         "answer": OPTION_LETTERS.index(it.answer),
                         "hint": "", "image": "image.png", "split": "test", "task": "closed choice"}
        test.append(pid)
    (root / "problems.json").write_text(json.dumps(problems, indent=1))
    (root / "pid_splits.json").write_text(json.dumps({"train": [], "val": [], "test": test}))


def _write_ocrbench(root: Path, n: int, seed: int, size: int) -> None:
    records = []
    for i, it in enumerate(_items("ocrbench", seed, n, ("word",), size)):
        rel = f"synthetic/{i:05d}.png"
        _save(it.image, root / "OCRBench_Images" / rel)
        records.append({"id": i, "dataset_name": "IIIT5K", "question": it.question, "answers": [it.answer],
                        "type": "Regular Text Recognition", "image_path": rel})
    (root / "OCRBench.json").write_text(json.dumps(records, indent=1))


def _write_mmmu(root: Path, n: int, seed: int, size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, it in enumerate(_items("mmmu", seed, n, ("choice", "number"), size)):
        buf = io.BytesIO()
        it.image.save(buf, format="PNG")
        mc = it.options is not None
        rows.append({"id": f"validation_Synthetic_{i + 1}",
                     "question": it.question.split("\n", 1)[0] if mc else _strip_short_suffix(it.question),
                     "options": repr(list(it.options or [])), "explanation": "",
                     "image_1": {"bytes": buf.getvalue(), "path": f"{i}.png"}, "img_type": "['Synthetic']",
                     "answer": it.answer, "topic_difficulty": "Easy",
                     "question_type": "multiple-choice" if mc else "open", "subfield": "Synthetic"})
    (root / "Synthetic").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "Synthetic" / "validation-00000-of-00001.parquet")


WRITERS: dict[str, Callable[[Path, int, int, int], None]] = {
    "gqa": _write_gqa,
    "textvqa": _write_textvqa,
    "pope": _write_pope,
    "mme": _write_mme,
    "scienceqa_img": _write_scienceqa,
    "ocrbench": _write_ocrbench,
    "mmmu": _write_mmmu,
}
SYNTHETIC_BENCHMARKS = tuple(WRITERS)


def write_suite(root: str | Path, n_per_bench: int, seed: int, image_size: int,
                benchmarks: Sequence[str] | None = None) -> Path:
    """Write the suite under root/<benchmark>/ (POPE: n per split; MME: n questions, n/2 images)."""
    if not isinstance(n_per_bench, int) or n_per_bench <= 0:
        raise ValueError(f"write_suite: n_per_bench must be a positive integer, got {n_per_bench!r}")
    names = list(benchmarks) if benchmarks is not None else list(SYNTHETIC_BENCHMARKS)
    unknown = [b for b in names if b not in WRITERS]
    if unknown:
        raise BenchmarkDataError(f"the synthetic suite has no {', '.join(unknown)}; it has "
                                 f"{', '.join(SYNTHETIC_BENCHMARKS)} (give eval.data_root for the others)")
    root = Path(root)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        WRITERS[name](root / name, n_per_bench, seed, image_size)
    (root / MANIFEST).write_text(json.dumps({"version": SUITE_VERSION, "n_per_bench": n_per_bench,
                                             "seed": seed, "image_size": image_size, "benchmarks": names}))
    logger.info("wrote the synthetic eval suite (%s) to %s", ", ".join(names), root)
    return root


def ensure_suite(cache_dir: str | Path, n_per_bench: int, seed: int, image_size: int) -> Path:
    """The suite for these settings under cache_dir/eval_suite/<hash>, written on first use. Safe
    when several processes race: each writes a private temp dir and renames it into place."""
    key = hashlib.sha256(json.dumps([SUITE_VERSION, n_per_bench, seed, image_size]).encode()).hexdigest()[:16]
    target = Path(cache_dir) / "eval_suite" / key
    if (target / MANIFEST).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_suite(tmp, n_per_bench, seed, image_size)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
