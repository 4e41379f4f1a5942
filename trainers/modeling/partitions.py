"""Weights read from disk straight into ZeRO-3 partitions: every rank reads, of each tensor, only the
flat range its partition holds (experts.loading.SafetensorsState.flat_range), so no rank holds or
gathers a whole weight while loading. DeepSpeed's layout: a parameter of n elements, padded to a
multiple of the world size w, is split into w equal ranges; rank r holds range r."""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from experts.loading import SafetensorsState, check_keys, default_dtype
from trainers.training import distributed as D

logger = logging.getLogger(__name__)


def is_partitioned(param: Tensor) -> bool:
    return hasattr(param, "ds_id")  # set by deepspeed.zero.Init


def partitioned(module: nn.Module) -> bool:
    return any(is_partitioned(p) for p in module.parameters())


def _range(state: Mapping[str, Tensor], key: str, start: int, end: int) -> Tensor:
    if isinstance(state, SafetensorsState):
        return state.flat_range(key, start, end)
    return state[key].reshape(-1)[start:end]


def _shape(state: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    return state.shape(key) if isinstance(state, SafetensorsState) else tuple(state[key].shape)


def fill(param: nn.Parameter, state: Mapping[str, Tensor], key: str) -> None:
    """`param` from state[key], checked for shape; a partition gets only its own range."""
    shape = tuple(param.ds_shape) if is_partitioned(param) else tuple(param.shape)
    if _shape(state, key) != shape:
        raise RuntimeError(f"size mismatch for {key}: {_shape(state, key)} given, {shape} in the model")
    with torch.no_grad():
        if not is_partitioned(param):
            param.copy_(state[key])
            return
        size = param.ds_tensor.ds_numel
        start = size * D.group_rank(param.ds_process_group)
        end = min(start + size, param.ds_numel)
        if end > start:
            param.ds_tensor.data[:end - start].copy_(_range(state, key, start, end))


def _fill_all(module: nn.Module, state: Mapping[str, Tensor], keys: dict[str, str]) -> None:
    """Each distinct parameter (by its first name) from state[keys[name]]; persistent buffers the
    state holds, whole (never partitioned)."""
    params = dict(module.named_parameters())
    for name, key in keys.items():
        fill(params[name], state, key)
    persistent = module.state_dict().keys()
    with torch.no_grad():
        for name, b in module.named_buffers():
            if name in state and name in persistent:
                b.copy_(state[name])


def load_state(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Strict load_state_dict that fills ZeRO-3 partitions in place (each rank its own range, no
    gather); a parameter shared under several names (tied weights) is filled once."""
    check_keys(module.state_dict(keep_vars=True), state, type(module).__name__)
    _fill_all(module, state, {name: name for name, _ in module.named_parameters()})


@contextmanager
def no_init_broadcast() -> Iterator[None]:
    """zero.Init broadcasts every new parameter from rank 0 before partitioning it, so each other
    rank receives whole tensors; when every weight is read from disk afterwards that copy is waste
    (and a whole module per rank at a time). Partition the uninitialised values instead."""
    try:
        from deepspeed.runtime.zero.partition_parameters import Init
    except ImportError:
        yield
        return
    real = getattr(Init, "_zero_init_param", None)
    if real is None:  # another DeepSpeed: keep its own path
        yield
        return

    def partition_only(self, param):
        self._convert_to_deepspeed_param(param)
        param.partition()

    Init._zero_init_param = partition_only
    try:
        yield
    finally:
        Init._zero_init_param = real


def _aliases(module: nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return names


def read_llm(directory: str | Path, *, dtype: torch.dtype, attn_implementation: str):
    """A saved causal LM (config.json + safetensors) built inside deepspeed.zero.Init (the caller's
    engine.build_context, which skips rank 0's broadcast) with no weight init, then filled from disk into the partitions; None when
    the files' names do not match the model's (a renamed or converted checkpoint: transformers'
    from_pretrained, which reads whole files, takes it)."""
    from transformers import AutoConfig
    from transformers import initialization as hf_init
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    directory = Path(directory)
    try:
        state = SafetensorsState(directory, dtype=dtype)
    except FileNotFoundError:
        return None
    config = AutoConfig.from_pretrained(str(directory))
    config._attn_implementation = attn_implementation
    cls = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if cls is None:
        return None
    with default_dtype(dtype), hf_init.no_init_weights():  # every weight comes from disk
        model = cls(config)
    model.tie_weights()
    keys = set(state)
    chosen = {}
    for names in _aliases(model).values():
        hit = [n for n in names if n in keys]
        if not hit:
            return None
        chosen[names[0]] = hit[0]
    if keys - set(chosen.values()) - set(model.state_dict().keys()):
        return None  # weights the model does not name
    _fill_all(model, state, chosen)
    logger.info("llm %s read into ZeRO-3 partitions (%d tensors)", directory, len(chosen))
    return model

