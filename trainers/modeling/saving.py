"""Saving weights that may be ZeRO-3 partitions without gathering the model: one submodule's own
parameters are gathered at a time (every rank takes part, as the gather is collective), rank 0
copies them to the CPU, and the LLM is written in shards as they fill. No rank holds more than one
submodule gathered; rank 0 holds at most one part (an expert, the fusion, the projector) or one
LLM shard of copies. Unpartitioned models take the same path with nothing to gather."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from trainers.estimate.memory import SAVE_SHARD_BYTES as SHARD_BYTES  # plan prices host RAM with it
INDEX = "model.safetensors.index.json"
_META = {"format": "pt"}  # what transformers expects in a safetensors header


def _gathered(params: list[nn.Parameter]):
    parts = [p for p in params if hasattr(p, "ds_id")]
    if not parts:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(parts, modifier_rank=None)


def state_chunks(module: nn.Module, *, is_main: bool, max_bytes: int = SHARD_BYTES) -> Iterator[dict[str, Tensor]]:
    """`module`'s state dict in chunks of about `max_bytes`, whole CPU tensors on rank 0 (empty
    chunks on the other ranks, which only join the gathers). A parameter shared by two modules
    (tied embeddings) appears once, under its first name, as transformers saves it."""
    chunk: dict[str, Tensor] = {}
    size, seen = 0, set()
    for prefix, mod in module.named_modules():
        head = f"{prefix}." if prefix else ""
        own = [(n, p) for n, p in mod.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in own)
        with torch.no_grad(), _gathered([p for _, p in own]):
            if is_main:
                for n, p in own:
                    chunk[head + n] = p.detach().to("cpu", copy=True).contiguous()
                    size += chunk[head + n].nbytes
        if is_main:
            for n, b in mod.named_buffers(recurse=False):
                if b is not None and n not in mod._non_persistent_buffers_set:
                    chunk[head + n] = b.detach().to("cpu", copy=True).contiguous()
                    size += chunk[head + n].nbytes
        if size >= max_bytes:
            yield chunk
            chunk, size = {}, 0
    yield chunk


def whole_state(module: nn.Module, *, is_main: bool) -> dict[str, Tensor]:
    """The state of one part, whole on rank 0 ({} elsewhere)."""
    state: dict[str, Tensor] = {}
    for chunk in state_chunks(module, is_main=is_main, max_bytes=2**62):
        state.update(chunk)
    return state


def save_part(module: nn.Module, path: Path, *, is_main: bool) -> None:
    """One part in one safetensors file (not written when its state is empty)."""
    state = whole_state(module, is_main=is_main)
    if is_main and state:
        save_file(state, str(path), metadata=_META)


def save_llm(llm: nn.Module, out: Path, *, is_main: bool, max_shard_bytes: int = SHARD_BYTES) -> None:
    """A transformers model directory (config, generation config, safetensors shards with their
    index when there are several) that AutoModelForCausalLM.from_pretrained reads, also into ZeRO-3
    partitions."""
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    files, total = [], 0
    for chunk in state_chunks(llm, is_main=is_main, max_bytes=max_shard_bytes):
        if not is_main or not chunk:
            continue
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(chunk, str(out / name), metadata=_META)
        files.append(name)
        weight_map.update(dict.fromkeys(chunk, name))
        total += sum(t.nbytes for t in chunk.values())
    if not is_main:
        return
    if len(files) == 1:
        (out / files[0]).replace(out / "model.safetensors")
    else:
        (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    llm.config.architectures = [type(llm).__name__]
    llm.config.save_pretrained(str(out))
    if getattr(llm, "generation_config", None) is not None and llm.can_generate():
        llm.generation_config.save_pretrained(str(out))
