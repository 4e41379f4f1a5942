"""LLaVA-format dataset: records validated and images checked when opened, so a bad file fails a
trial before training; a broken image is an error naming record and path, or a counted skip."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from trainers.data.errors import DataError
from trainers.data.records import LlavaRecord, read_records
from trainers.data.templates import IMAGE_TOKEN, encode_conversation, get_template

logger = logging.getLogger(__name__)

_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_image(path: str | Path, image_size: int) -> torch.Tensor:
    """RGB float tensor [3, image_size, image_size] in [0, 1] (bilinear resize). Raises OSError etc."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def check_image(path: Path) -> str | None:
    """None if the file looks like a readable image, else the reason."""
    if not path.is_file():
        return "file not found"
    try:
        with Image.open(path) as im:
            im.verify()
    except _IMAGE_ERRORS as err:
        return f"unreadable image ({type(err).__name__}: {err})"
    return None


class LlavaDataset(Dataset):
    """Items: {input_ids: long[L], labels: long[L], image: float[3,S,S] in [0,1], has_image: bool}.
    Text-only records get an all-zero image with has_image=False (the model must not look at it)."""

    def __init__(
        self,
        path: str | Path,
        image_folder: str | Path | None,
        image_size: int,
        tokenizer,
        template: str,
        max_length: int,
        on_bad_image: Literal["error", "skip"] = "error",
        verify_images: bool = True,
    ):
        if on_bad_image not in ("error", "skip"):
            raise DataError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if image_size <= 0 or max_length <= 0:
            raise DataError(f"image_size and max_length must be positive, got {image_size}, {max_length}")
        self.template = get_template(template)
        self.path = Path(path)
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.image_size = image_size
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.on_bad_image = on_bad_image
        self.skipped: list[tuple[str, str]] = []
        image_ids = tokenizer(IMAGE_TOKEN, add_special_tokens=False)["input_ids"]
        if len(image_ids) != 1:
            raise DataError(f"{IMAGE_TOKEN} is {len(image_ids)} tokens for this tokenizer; use load_tokenizer()")
        self.image_token_id = int(image_ids[0])
        records = read_records(self.path)
        if any(r.image for r in records) and self.image_folder is None:
            raise DataError(f"{self.path}: records have images but no image_folder was given")
        if self.image_folder is not None and not self.image_folder.is_dir():
            raise DataError(f"image folder {self.image_folder} does not exist")
        self.records = [r for r in records if not verify_images or self._usable(r)]
        if not self.records:
            raise DataError(f"{self.path}: every record was skipped ({len(self.skipped)} bad images)")
        if self.skipped:
            logger.warning("%s: skipped %d of %d records with bad images", self.path, len(self.skipped), len(records))

    def _image_path(self, rec: LlavaRecord) -> Path:
        return self.image_folder / rec.image  # type: ignore[operator]

    def _bad_image(self, rec: LlavaRecord, reason: str) -> None:
        msg = f"record {rec.id} ({rec.where}): image {self._image_path(rec)}: {reason}"
        if self.on_bad_image == "error":
            raise DataError(msg)
        self.skipped.append((rec.id, reason))
        logger.warning("skipping %s", msg)

    def _usable(self, rec: LlavaRecord) -> bool:
        if rec.image is None:
            return True
        reason = check_image(self._image_path(rec))
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

    def __getitem__(self, index: int) -> dict:
        # A file that passed verify() can still fail to decode; skip mode then moves on (counted).
        for attempt in range(len(self.records)):
            rec = self.records[(index + attempt) % len(self.records)]
            image = torch.zeros(3, self.image_size, self.image_size)
            if rec.image is not None:
                try:
                    image = load_image(self._image_path(rec), self.image_size)
                except _IMAGE_ERRORS as err:
                    self._bad_image(rec, f"cannot decode ({type(err).__name__}: {err})")
                    continue
            ids, labels = self.encode(rec)
            return {
                "input_ids": torch.tensor(ids, dtype=torch.long),
                "labels": torch.tensor(labels, dtype=torch.long),
                "image": image,
                "has_image": rec.image is not None,
            }
        raise DataError(f"{self.path}: no record with a decodable image")


def read_texts(path: str | Path) -> list[str]:
    """Conversation values of a LLaVA file, without opening images or needing a tokenizer."""
    return [t["value"] for r in read_records(path) for t in r.conversations]
