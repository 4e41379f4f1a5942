"""Batching LlavaDataset items into what the LLM sees: each IMAGE_TOKEN expanded here, on the host,
to the model's num_image_tokens slots (labels ignored there), so the model only fills the slots and
no batch shape depends on a device value. Padded (right) or padding-free packed (one row, position
ids restarting per sequence, for varlen attention); token counts as host ints."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from trainers.data.errors import DataError
from trainers.data.templates import IGNORE_INDEX


def expand_image_tokens(ids: torch.Tensor, labels: torch.Tensor, image_token_id: int,
                        num_image_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D ids/labels with their (at most one) image token repeated num_image_tokens times."""
    at = (ids == image_token_id).nonzero().flatten().tolist()  # host tensors: no device sync
    if len(at) > 1:
        raise DataError(f"a sequence holds {len(at)} image tokens; at most one is supported")
    if not at:
        return ids, labels
    p = at[0]
    slots = torch.full((num_image_tokens,), image_token_id, dtype=ids.dtype)
    ignore = torch.full((num_image_tokens,), IGNORE_INDEX, dtype=labels.dtype)
    return torch.cat([ids[:p], slots, ids[p + 1:]]), torch.cat([labels[:p], ignore, labels[p + 1:]])


def collate(batch: Sequence[dict], pad_id: int, image_token_id: int, num_image_tokens: int,
            pack: bool = False) -> dict:
    """Padded: {input_ids [B,W] (pad_id), labels [B,W] (-100 on padding), attention_mask [B,W]}.
    Packed: the same keys with B=1 and W = the total length, plus position_ids restarting at 0 per
    sequence; each sequence's first label is -100 so no loss crosses a boundary (a padded batch
    never predicts a row's first token either). Both: images uint8 [n_with_image,3,S,S] (None when
    no item has one), num_tokens and num_targets as ints (LLM input tokens, tokens with a loss)."""
    if not batch:
        raise DataError("collate: empty batch")
    if pad_id is None or pad_id < 0:
        raise DataError(f"collate: pad_id must be a token id >= 0, got {pad_id}")
    seqs = []
    for i, item in enumerate(batch):
        ids, lab = item["input_ids"], item["labels"]
        if ids.shape != lab.shape:
            raise DataError(f"collate: item {i} has {ids.numel()} input_ids but {lab.numel()} labels")
        seqs.append(expand_image_tokens(ids, lab, image_token_id, num_image_tokens))
        n_img = int((ids == image_token_id).sum())
        if n_img != int(bool(item["has_image"])):
            raise DataError(f"collate: item {i} has {n_img} image tokens but has_image={bool(item['has_image'])}")
    with_image = [item["image"] for item in batch if item["has_image"]]
    if len({tuple(im.shape) for im in with_image}) > 1:
        raise DataError(f"collate: images of different sizes in one batch: {sorted({tuple(i.shape) for i in with_image})}")
    out = _pack(seqs) if pack else _pad(seqs, int(pad_id))
    out["images"] = torch.stack(with_image) if with_image else None
    out["num_tokens"] = sum(s[0].numel() for s in seqs)
    out["num_targets"] = int((out["labels"][:, 1:] != IGNORE_INDEX).sum())
    return out


def _pad(seqs: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict:
    longest = max(ids.numel() for ids, _ in seqs)
    n = len(seqs)
    input_ids = torch.full((n, longest), pad_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, longest), dtype=torch.long)
    for i, (ids, lab) in enumerate(seqs):
        input_ids[i, :ids.numel()], labels[i, :ids.numel()], attention_mask[i, :ids.numel()] = ids, lab, 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def _pack(seqs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    labels = [lab.clone() for _, lab in seqs]
    for lab in labels:
        lab[0] = IGNORE_INDEX
    input_ids = torch.cat([ids for ids, _ in seqs])[None]
    positions = torch.cat([torch.arange(ids.numel()) for ids, _ in seqs])[None]
    return {"input_ids": input_ids, "labels": torch.cat(labels)[None],
            "attention_mask": torch.ones_like(input_ids), "position_ids": positions}


def make_collate(pad_id: int, image_token_id: int, num_image_tokens: int, pack: bool = False):
    """A picklable collate_fn for DataLoader workers."""
    return partial(collate, pad_id=pad_id, image_token_id=image_token_id, num_image_tokens=num_image_tokens,
                   pack=pack)


def padding_fraction(batch: dict) -> float:
    """Share of the LLM's input positions that are padding."""
    return 1.0 - batch["num_tokens"] / batch["input_ids"].numel()
