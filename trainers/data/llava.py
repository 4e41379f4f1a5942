"""LLaVA-format dataset: records validated and images checked before training (once per dataset at
launch, see trainers.data.verify), so a bad file fails a trial first; a broken image is an error
naming record and path, or a counted skip; a conversation over max_length is an error or a counted cut."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from trainers.data.errors import DataError
from trainers.data.images import IMAGE_ERRORS, check_image, load_image
from trainers.data.records import LlavaRecord, read_records
from trainers.data.templates import IMAGE_TOKEN, conversation_lengths, encode_conversation, get_template

logger = logging.getLogger(__name__)


class LlavaDataset(Dataset):
    """Items: {input_ids: long[L], labels: long[L], image: uint8[3,S,S], has_image: bool}.
    Text-only records get an all-zero image with has_image=False (the collate leaves it out).

    bad_images: the launch-time verification ({image: reason}); None opens and verifies every image
    here. skip_dir: where each process appends its skips (<pid>.jsonl), so skips in DataLoader
    worker processes (and other ranks) count too. `lengths[i]`: record i's token count (negative
    for text-only records: modality grouping); `truncated`: how many records were cut to max_length."""

    def __init__(
        self,
        path: str | Path,
        image_folder: str | Path | None,
        image_size: int,
        *, tokenizer,
        template: str,
        max_length: int,
        on_bad_image: Literal["error", "skip"] = "error",
        bad_images: Mapping[str, str] | None = None,
        on_too_long: Literal["truncate", "error"] = "truncate",
        skip_dir: str | Path | None = None,
        fraction: float = 1.0,
        fraction_seed: int = 0,
    ):
        if on_bad_image not in ("error", "skip"):
            raise DataError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if on_too_long not in ("truncate", "error"):
            raise DataError(f"on_too_long must be 'truncate' or 'error', got {on_too_long!r}")
        if image_size <= 0 or max_length <= 0:
            raise DataError(f"image_size and max_length must be positive, got {image_size}, {max_length}")
        self.template = get_template(template)
        self.path = Path(path)
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.image_size = image_size
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.on_bad_image = on_bad_image
        self._skipped: list[tuple[str, str]] = []
        self.skip_dir = Path(skip_dir) if skip_dir is not None else None
        image_ids = tokenizer(IMAGE_TOKEN, add_special_tokens=False)["input_ids"]
        if len(image_ids) != 1:
            raise DataError(f"{IMAGE_TOKEN} is {len(image_ids)} tokens for this tokenizer; use load_tokenizer()")
        self.image_token_id = int(image_ids[0])
        records = take_fraction(read_records(self.path), fraction, fraction_seed)
        if any(r.image for r in records) and self.image_folder is None:
            raise DataError(f"{self.path}: records have images but no image_folder was given")
        if self.image_folder is not None and not self.image_folder.is_dir():
            raise DataError(f"image folder {self.image_folder} does not exist")
        self.records = [r for r in records if self._usable(r, bad_images)]
        if not self.records:
            raise DataError(f"{self.path}: every record was skipped ({len(self.skipped)} bad images)")
        if self.skipped:
            logger.warning("%s: skipped %d of %d records with bad images", self.path, len(self.skipped), len(records))
        full = conversation_lengths([r.conversations for r in self.records], tokenizer, self.template)
        long = [i for i, n in enumerate(full) if n > max_length]
        if long and on_too_long == "error":
            rec = self.records[long[0]]
            raise DataError(f"record {rec.id} ({rec.where}): {full[long[0]]} tokens exceed llm.max_length={max_length} "
                            f"({len(long)} records do; data.on_too_long: truncate cuts and counts them)")
        if long:
            logger.warning("%s: %d of %d records cut to max_length=%d tokens (reported as truncated_records)",
                           self.path, len(long), len(full), max_length)
        self.truncated = len(long)
        self.lengths = [min(n, max_length) * (1 if r.image is not None else -1) for n, r in zip(full, self.records)]

    def _image_path(self, rec: LlavaRecord) -> Path:
        return self.image_folder / rec.image  # type: ignore[operator]

    def _bad_image(self, rec: LlavaRecord, reason: str) -> None:
        msg = f"record {rec.id} ({rec.where}): image {self._image_path(rec)}: {reason}"
        if self.on_bad_image == "error":
            raise DataError(msg)
        self._skipped.append((rec.id, reason))
        if self.skip_dir is not None:
            self.skip_dir.mkdir(parents=True, exist_ok=True)
            with (self.skip_dir / f"{os.getpid()}.jsonl").open("a") as f:
                f.write(json.dumps([rec.id, reason]) + "\n")
        logger.warning("skipping %s", msg)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(record id, reason) of every record skipped so far, each once, in any process."""
        seen = dict(self._skipped)
        if self.skip_dir is not None:
            for log in sorted(self.skip_dir.glob("*.jsonl")):
                for line in log.read_text().splitlines():
                    rid, reason = json.loads(line)
                    seen.setdefault(rid, reason)
        return list(seen.items())

    def _usable(self, rec: LlavaRecord, bad_images: Mapping[str, str] | None) -> bool:
        if rec.image is None:
            return True
        reason = check_image(self._image_path(rec)) if bad_images is None else bad_images.get(rec.image)
        if reason is None:
            return True
        self._bad_image(rec, reason)
        return False

    def __len__(self) -> int:
        return len(self.records)

    def encode(self, rec: LlavaRecord) -> tuple[list[int], list[int]]:
        try:
            return encode_conversation(rec.conversations, self.tokenizer, self.template, self.max_length)
        except DataError as err:
            raise DataError(f"record {rec.id} ({rec.where}): {err}") from None

    def load(self, index: int) -> tuple[int, torch.Tensor | None]:
        """(the record item `index` reads, its uint8 image or None when text-only). A file that passed
        verify() can still fail to decode; skip mode then moves on to the next record (logged; a
        DataLoader worker's count stays in that worker)."""
        for attempt in range(len(self.records)):
            j = (index + attempt) % len(self.records)
            rec = self.records[j]
            if rec.image is None:
                return j, None
            try:
                return j, load_image(self._image_path(rec), self.image_size)
            except IMAGE_ERRORS as err:
                self._bad_image(rec, f"cannot decode ({type(err).__name__}: {err})")
        raise DataError(f"{self.path}: no record with a decodable image")

    def text_item(self, j: int) -> dict:
        """Record j's tokens: {input_ids, labels, has_image} (no image opened)."""
        rec = self.records[j]
        ids, labels = self.encode(rec)
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                "has_image": rec.image is not None}

    def __getitem__(self, index: int) -> dict:
        j, image = self.load(index)
        item = self.text_item(j)
        item["image"] = image if image is not None else torch.zeros(3, self.image_size, self.image_size,
                                                                    dtype=torch.uint8)
        return item


def take_fraction(records: list[LlavaRecord], fraction: float, seed: int) -> list[LlavaRecord]:
    """A fixed share of the records, in file order: the same for every trial with the same seed."""
    if fraction >= 1:
        return records
    import numpy as np

    k = max(1, round(fraction * len(records)))
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=k, replace=False))
    return [records[i] for i in keep]


def read_texts(path: str | Path) -> list[str]:
    """Conversation values of a LLaVA file, without opening images or needing a tokenizer."""
    return [t["value"] for r in read_records(path) for t in r.conversations]
