"""Data side of a trial: LLaVA-format reader, conversation templates, tokenizers, synthetic
datasets and batching. Names are imported lazily so `trainers.data.synthetic` stays light."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DataError": "errors", "UnknownNameError": "errors",
    "IMAGE_TOKEN": "templates", "IGNORE_INDEX": "templates", "TEMPLATES": "templates",
    "build_prompt": "templates", "encode_conversation": "templates", "encode_prompt": "templates",
    "stop_token_ids": "templates", "get_template": "templates",
    "build_word_tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "LlavaDataset": "llava", "load_image": "images", "read_texts": "llava",
    "collate": "collate", "make_collate": "collate", "expand_image_tokens": "collate",
    "padding_fraction": "collate",
    "make_item": "synthetic", "SyntheticItem": "synthetic", "KINDS": "synthetic",
    "ANSWER_SETS": "synthetic", "write_pretrain": "synthetic", "write_sft": "synthetic",
    "write_heldout": "synthetic", "ensure_synthetic": "synthetic", "vocab_texts": "synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainers.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trainers.data.{_EXPORTS[name]}"), name)
