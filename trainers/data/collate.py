"""Batching LlavaDataset items: right padding, attention mask, stacked images; token counting."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from trainers.data.errors import DataError
from trainers.data.templates import IGNORE_INDEX


def collate(batch: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """{input_ids [B,L] (pad_id), labels [B,L] (-100 on padding), attention_mask [B,L],
    images [B,3,S,S], has_image bool[B]}; L = longest item."""
    if not batch:
        raise DataError("collate: empty batch")
    if pad_id is None or pad_id < 0:
        raise DataError(f"collate: pad_id must be a token id >= 0, got {pad_id}")
    sizes = {tuple(item["image"].shape) for item in batch}
    if len(sizes) != 1:
        raise DataError(f"collate: images of different sizes in one batch: {sorted(sizes)}")
    longest = max(int(item["input_ids"].numel()) for item in batch)
    n = len(batch)
    input_ids = torch.full((n, longest), int(pad_id), dtype=torch.long)
    labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, longest), dtype=torch.long)
    for i, item in enumerate(batch):
        ids, lab = item["input_ids"], item["labels"]
        if ids.shape != lab.shape:
            raise DataError(f"collate: item {i} has {ids.numel()} input_ids but {lab.numel()} labels")
        length = ids.numel()
        input_ids[i, :length] = ids
        labels[i, :length] = lab
        attention_mask[i, :length] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "images": torch.stack([item["image"] for item in batch]),
        "has_image": torch.tensor([bool(item["has_image"]) for item in batch], dtype=torch.bool),
    }


def make_collate(pad_id: int):
    """A picklable collate_fn for DataLoader workers."""
    return partial(collate, pad_id=pad_id)


def count_text_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) text tokens in a collated batch, before image-token expansion."""
    return int(batch["attention_mask"].sum().item())


def count_supervised_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry a loss (the answers)."""
    return int((batch["labels"] != IGNORE_INDEX).sum().item())
