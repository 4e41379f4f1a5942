"""The language model: any Hugging Face causal LM (hub id / local path) or a tiny random-init preset."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from trainers.modeling.partitions import is_partitioned, read_llm
from trainers.spec import LLMSpec

logger = logging.getLogger(__name__)

# Tiny presets: Llama architecture, random init (seeded), vocabulary from the data's word tokenizer.
LLM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny-llama": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False),
    # a cheaper stand-in for tiny-llama (multi-fidelity proxy rungs on CPU)
    "micro-llama": dict(hidden_size=32, intermediate_size=86, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=1024, tie_word_embeddings=False),
    "small-llama": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False),
    # ~1.1B params (TinyLlama-1.1B's shape) for GPU throughput/MFU benchmarks, random init
    "bench-llama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                        num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False),
    # Llama-2-7B / Vicuna-7B shape (6.7B params with a 32k vocabulary) for full-size GPU benchmarks
    "bench-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, max_position_embeddings=4096, tie_word_embeddings=False),
}


class UnknownLLMPresetError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class LLMSetupError(ValueError):
    """An LLM setting this machine or model cannot honour (one line naming the field)."""


def check_attn_implementation(name: str) -> None:
    """flash_attention_2 needs the flash-attn package and a CUDA GPU; an error naming what is missing."""
    if name != "flash_attention_2":
        return
    if importlib.util.find_spec("flash_attn") is None:
        raise LLMSetupError("llm.attn_implementation: flash_attention_2 needs the flash-attn package, which is not "
                            "installed (pip install flash-attn), or use sdpa")
    if not torch.cuda.is_available():
        raise LLMSetupError("llm.attn_implementation: flash_attention_2 needs a CUDA GPU; use sdpa on CPU")


def check_positions(max_length: int, num_image_tokens: int, positions: int) -> None:
    """A sequence of max_length text tokens, its image token expanded, must fit the LLM's positions."""
    need = max_length - 1 + num_image_tokens
    if need > positions:
        raise LLMSetupError(f"llm.max_length: {max_length} text tokens + {num_image_tokens - 1} more for the image "
                            f"= {need}, over the LLM's {positions} positions; lower llm.max_length")


def check_llm_spec(spec: LLMSpec) -> None:
    """Cheap checks done before any process starts."""
    if spec.preset is not None and spec.preset not in LLM_PRESETS:
        raise UnknownLLMPresetError(f"unknown llm preset {spec.preset!r}; known: {', '.join(sorted(LLM_PRESETS))}")
    check_attn_implementation(spec.attn_implementation)
    if spec.source is not None:
        src = spec.source
        looks_local = src.startswith((".", "/", "~")) or Path(src).exists()
        if looks_local and not (Path(src).expanduser() / "config.json").is_file():
            raise FileNotFoundError(f"llm.source {src!r}: no config.json there")


def _known_config(spec: LLMSpec) -> dict[str, Any]:
    """The LLM's config facts known before loading (a preset, a local config.json), else {}."""
    if spec.preset is not None:
        return LLM_PRESETS[spec.preset]
    cfg = Path(spec.source).expanduser() / "config.json"
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def llm_positions(spec: LLMSpec) -> int | None:
    """max_position_embeddings when known before loading (a preset, a local config.json)."""
    return _known_config(spec).get("max_position_embeddings")


def llm_num_layers(spec: LLMSpec) -> int | None:
    """The number of decoder layers when known before loading (a preset, a local config.json)."""
    return _known_config(spec).get("num_hidden_layers")


def build_tokenizer(spec: LLMSpec, texts: Iterable[str] | None, out_dir: str | Path):
    """The preset's word tokenizer over `texts` (saved to out_dir), or the source's own tokenizer."""
    from trainers.data.tokenizer import build_word_tokenizer, load_tokenizer

    if spec.preset is not None:
        if texts is None:
            raise ValueError(f"llm preset {spec.preset!r} needs the data texts to build its tokenizer")
        return build_word_tokenizer(texts, out_dir)
    return load_tokenizer(spec.source, spec.template)


def import_llm_class(spec: LLMSpec) -> type[PreTrainedModel] | None:
    """The source LLM's transformers class, imported now. deepspeed.zero.Init hooks the classes
    defined while it is active and, on exit, puts back their __init__ from before any class
    decorator ran (transformers' hub-kernel layers lose theirs): import them before entering it."""
    if spec.source is None:
        return None
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(spec.source))]
    except (OSError, KeyError, ValueError):
        return None  # build_llm names the problem


def build_llm(spec: LLMSpec, tokenizer, seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal LM in `dtype` whose embeddings cover the tokenizer (resized when tokens were added);
    a source checkpoint is read straight into `dtype` (never a whole fp32 copy first)."""
    check_llm_spec(spec)
    if spec.preset is not None:
        cfg = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          attn_implementation=spec.attn_implementation, **LLM_PRESETS[spec.preset])
        gen = torch.random.fork_rng()
        with gen:  # random init that depends only on the seed, not on what ran before
            torch.manual_seed(seed)
            model = LlamaForCausalLM(cfg).to(dtype)
        logger.info("llm preset %s: %.2fM params (random init, seed %d)", spec.preset,
                    sum(p.numel() for p in model.parameters()) / 1e6, seed)
    else:
        try:
            model = load_causal_lm(spec.source, dtype=dtype, attn_implementation=spec.attn_implementation)
        except OSError as err:
            raise FileNotFoundError(f"cannot load llm.source {spec.source!r}: {str(err).splitlines()[0]}") from None
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            grow_vocabulary(model, len(tokenizer))
    return finish_llm(model, spec, tokenizer)


def finish_llm(model: PreTrainedModel, spec: LLMSpec, tokenizer) -> PreTrainedModel:
    """What a built LLM takes from the trial beyond its weights: the pad token, checkpointing."""
    if model.generation_config is not None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if spec.checkpointing:
        enable_checkpointing(model)
    return model


def load_causal_lm(source: str | Path, *, dtype: torch.dtype, attn_implementation: str) -> PreTrainedModel:
    """A hub id or directory read straight into `dtype`. Inside a ZeRO-3 build context a local
    directory is read into the partitions, each rank its own range (trainers/modeling/partitions.py);
    transformers' own ZeRO-3 load, which reads whole files on rank 0, is the fallback."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled() and Path(source).expanduser().is_dir():
        model = read_llm(Path(source).expanduser(), dtype=dtype, attn_implementation=attn_implementation)
        if model is not None:
            return model
        logger.info("llm %s: names differ from the model's; transformers loads it (whole files on rank 0)", source)
    return AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, attn_implementation=attn_implementation)


def _zero(params: list[torch.nn.Parameter]) -> bool:
    return any(is_partitioned(p) for p in params)


def _read(param: torch.nn.Parameter) -> torch.Tensor:
    """The whole value of a parameter, gathered for the read when ZeRO-3 partitioned it."""
    if not _zero([param]):
        return param.data.clone()
    import deepspeed

    with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
        return param.data.clone()


def _write(params: list[torch.nn.Parameter]):
    """A context in which rank 0's writes to `params` reach every partition (ZeRO-3), else nothing."""
    if not _zero(params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def _grown(old: torch.Tensor, n: int, like: nn.Module, bias: bool = False):
    """A module of `n` rows: the old rows, then new rows at the old rows' mean (deterministic, so
    DDP and ZeRO runs of one seed start from the same weights)."""
    rows, width = old.shape
    mod = nn.Embedding(n, width, dtype=old.dtype) if isinstance(like, nn.Embedding) \
        else nn.Linear(width, n, bias=bias, dtype=old.dtype)
    with torch.no_grad(), _write([mod.weight]):
        mod.weight.data[:rows] = old
        mod.weight.data[rows:] = old.float().mean(0).to(old.dtype)
    return mod


def grow_vocabulary(model: PreTrainedModel, n: int) -> None:
    """Embeddings (and an untied LM head) grown to `n` rows for added tokens (the image token, role
    markers, a pad token). Replaces transformers' resize_token_embeddings, whose mean init indexes
    the partitioned weights under ZeRO-3 (built inside deepspeed.zero.Init, a partition is empty);
    here each old weight is read whole once and the new module is written by rank 0."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and (head.weight is emb.weight or model.config.get_text_config().tie_word_embeddings)
    model.set_input_embeddings(_grown(_read(emb.weight), n, emb))
    if head is not None and not tied:
        if head.bias is not None:
            raise LLMSetupError("llm.source: an LM head with a bias cannot grow its vocabulary here")
        model.set_output_embeddings(_grown(_read(head.weight), n, head))
    model.config.get_text_config().vocab_size = n
    if tied:
        model.tie_weights()


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Activation (gradient) checkpointing of the decoder layers, non-reentrant (frozen inputs work)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
