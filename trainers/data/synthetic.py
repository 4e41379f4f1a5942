"""Synthetic LLaVA-format datasets, deterministic by seed: captions (pre-training), Q/A over every
kind (SFT), held-out Q/A. Layout: DIR/{pretrain,sft,heldout}.json + DIR/images/*.png, with the
records' "image" relative to DIR/images (the image folder)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import uuid
from pathlib import Path

from trainers.data.errors import DataError
from trainers.data.synthetic_kinds import (  # noqa: F401  (re-exported API)
    ANSWER_SETS,
    KINDS,
    SyntheticItem,
    make_item,
)
from trainers.data.synthetic_yesno import SFT_KINDS, SFT_MIX, make_sft_item
from trainers.data.templates import IMAGE_TOKEN

logger = logging.getLogger(__name__)

IMAGE_SUBDIR = "images"
GENERATOR_VERSION = 3  # bump when scenes change, so cached datasets are regenerated
_MANIFEST = "manifest.json"


def _write_split(out_dir: str | Path, split: str, n: int, seed: int, *, image_size: int, qa: bool) -> Path:
    if not isinstance(n, int) or n <= 0:
        raise DataError(f"write_{split}: n must be a positive integer, got {n!r}")
    out_dir = Path(out_dir)
    images = out_dir / IMAGE_SUBDIR
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"eagle-synthetic:{split}:{seed}")  # str seeds hash deterministically
    kinds = SFT_MIX if qa else tuple(KINDS)
    records = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        item = make_sft_item(rng, kind, image_size)
        name = f"{split}_{i:06d}.png"
        item.image.save(images / name, format="PNG")
        if qa:
            convs = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{item.question}"},
                     {"from": "gpt", "value": item.answer}]
        else:
            convs = [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": item.caption}]
        rec = {"id": f"{split}-{i:06d}", "image": name, "conversations": convs, "kind": kind}
        if qa and item.options is not None:
            rec["options"] = item.options
        records.append(rec)
    path = out_dir / f"{split}.json"
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("wrote %d synthetic %s records to %s", n, split, path)
    return path


def write_pretrain(dir: str | Path, n: int, seed: int, image_size: int) -> Path:
    """Caption records (human "<image>", gpt caption) for the plain template."""
    return _write_split(dir, "pretrain", n, seed, image_size=image_size, qa=False)


def write_sft(dir: str | Path, n: int, seed: int, image_size: int) -> Path:
    """Q/A records over the kinds of SFT_MIX (human "<image>\\n{question}", gpt answer)."""
    return _write_split(dir, "sft", n, seed, image_size=image_size, qa=True)


def write_heldout(dir: str | Path, n: int, seed: int, image_size: int) -> Path:
    """Q/A records like write_sft, from an independent random stream (held-out loss)."""
    return _write_split(dir, "heldout", n, seed, image_size=image_size, qa=True)


def vocab_texts() -> list[str]:
    """Every answer, option and question word the generator can produce (for word tokenizers that
    must also cover evaluation items absent from the training files)."""
    rng = random.Random("eagle-synthetic:vocab")
    texts = [" ".join(v) for v in ANSWER_SETS.values()]
    for kind in SFT_KINDS:
        for _ in range(64):
            item = make_sft_item(rng, kind, 16)
            texts += [item.question, item.answer, item.caption]
    texts += [" ".join(str(i) for i in range(1, 5)), "row column rows columns"]
    return texts


def spec_key(spec) -> str:
    """Hash of what determines the files (n_eval and dir do not; the SFT mixture does)."""
    fields = {k: getattr(spec, k) for k in ("seed", "image_size", "n_pretrain", "n_sft", "n_heldout")}
    blob = json.dumps({"version": GENERATOR_VERSION, "sft_mix": SFT_MIX, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _paths(d: Path) -> dict[str, Path]:
    return {
        "dir": d,
        "image_folder": d / IMAGE_SUBDIR,
        "pretrain": d / "pretrain.json",
        "sft": d / "sft.json",
        "heldout": d / "heldout.json",
    }


def _check_existing(target: Path, key: str) -> dict[str, Path] | None:
    manifest = target / _MANIFEST
    if not target.exists():
        return None
    if not manifest.is_file():
        raise DataError(f"{target} exists but holds no synthetic dataset ({_MANIFEST} missing)")
    found = json.loads(manifest.read_text()).get("key")
    if found != key:
        raise DataError(f"{target} holds synthetic data of another spec (key {found}, wanted {key})")
    return _paths(target)


def ensure_synthetic(spec, root: str | Path) -> dict[str, Path]:
    """Generate the datasets of `spec` (a trainers.spec.SyntheticSpec) on first use and reuse them
    after. Directory: spec.dir, else root/synthetic/<hash of spec>. Concurrent callers are safe:
    each writes a private temp dir and renames it into place; a loser discards its copy."""
    key = spec_key(spec)
    target = Path(spec.dir) if spec.dir else Path(root) / "synthetic" / key
    existing = _check_existing(target, key)
    if existing is not None:
        return existing
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_pretrain(tmp, spec.n_pretrain, spec.seed, spec.image_size)
        write_sft(tmp, spec.n_sft, spec.seed, spec.image_size)
        write_heldout(tmp, spec.n_heldout, spec.seed, spec.image_size)
        (tmp / _MANIFEST).write_text(json.dumps({"key": key, "version": GENERATOR_VERSION,
                                                 "spec": spec.model_dump(mode="json")}, sort_keys=True))
        try:
            os.rename(tmp, target)  # atomic; fails if another process got there first
            logger.info("synthetic data ready in %s", target)
        except OSError:
            if not (target / _MANIFEST).is_file():
                raise
            logger.info("synthetic data in %s was written by another process", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _check_existing(target, key)
    assert result is not None
    return result
