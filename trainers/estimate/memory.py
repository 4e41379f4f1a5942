"""Peak training memory per GPU: model states by strategy (weights, gradients, AdamW states by ZeRO
stage) plus the activations autograd saves, counted on fake tensors (no weights are ever made),
with and without activation checkpointing; and a CPU measurement of a real step to check it.

Activations are what autograd keeps for backward (saved_tensors_hooks), counted once per storage.
Checkpointed blocks keep only their inputs, and one block's activations are rebuilt at a time."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

GiB = 2**30
ZERO = {"ddp": 0, "deepspeed_zero2": 2, "deepspeed_zero3": 3}
DS_BUCKET_ELEMENTS = 5e7  # trainers.training.dsconfig: reduce/allgather bucket size


@dataclass
class Saved:
    """Bytes autograd saved during one forward, with the checkpointable blocks' share."""

    total: int = 0
    largest: int = 0  # the largest tensor any op made (forward or backward): the transient on top
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (bytes saved inside, input bytes)

    def with_checkpointing(self) -> int:
        """Activations kept when every block is checkpointed: outside blocks + block inputs +
        one block recomputed in backward."""
        if not self.blocks:
            return self.total
        inner = sum(b for b, _ in self.blocks)
        return self.total - inner + sum(i for _, i in self.blocks) + max(b for b, _ in self.blocks)

    def scaled(self, layers_from: int, layers_to: int, other: "Saved") -> "Saved":
        """Extrapolate from a 1-block (`self`) and 2-block (`other`) model to `layers_to` blocks."""
        per = other.total - self.total
        blocks = self.blocks[:1] + other.blocks[-1:] * (layers_to - 1) if self.blocks else []
        return Saved(self.total + per * (layers_to - layers_from), max(self.largest, other.largest), blocks)


def checkpoint_blocks(module: nn.Module) -> list[nn.Module]:
    """The modules activation checkpointing wraps: transformers' decoder/encoder layers and the
    blocks of timm models."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    found = [m for m in module.modules() if isinstance(m, GradientCheckpointingLayer)]
    if found:
        return found
    out: list[nn.Module] = []
    for name, m in module.named_modules():
        if name.split(".")[-1] == "blocks" and isinstance(m, (nn.Sequential, nn.ModuleList)):
            out.extend(m.children())
    return out


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes() if t.layout == torch.strided else t.numel() * t.element_size()


class _Largest(TorchDispatchMode):
    """Records the largest tensor an op returns (a frozen expert's no-grad forward peaks on it)."""

    def __init__(self, saved: Saved) -> None:
        super().__init__()
        self.saved = saved

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                self.saved.largest = max(self.saved.largest, t.numel() * t.element_size())
        return out


@contextmanager
def count_saved(model: nn.Module) -> Iterator[Saved]:
    """Count what autograd saves inside the block (parameters excluded: they are model states)."""
    saved = Saved()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, torch.Tensor] = {}  # keeps the tensors alive so a storage address is never reused
    running = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided:
            key = t.untyped_storage()._cdata
            if key not in params and key not in seen:
                seen[key] = t
                running[0] += _nbytes(t)
        return t

    marks: list[tuple[int, int]] = []

    def pre(_m, args, kwargs):
        first = next((a for a in list(args) + list(kwargs.values()) if torch.is_tensor(a)), None)
        marks.append((running[0], _nbytes(first) if first is not None and torch.is_grad_enabled() else 0))

    def post(_m, _args, _out):
        start, inp = marks.pop()
        if torch.is_grad_enabled():
            saved.blocks.append((running[0] - start, inp))

    handles = []
    for block in checkpoint_blocks(model):
        handles += [block.register_forward_pre_hook(pre, with_kwargs=True), block.register_forward_hook(post)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _Largest(saved):
            yield saved
    finally:
        saved.total = running[0]
        for h in handles:
            h.remove()


SAVE_SHARD_BYTES = 2 * 2**30  # trainers/modeling/saving.py writes the LLM in shards of this size


def state_bytes(trainable: int, frozen: int, strategy: str, bf16: bool, world: int) -> dict[str, float]:
    """Weights, gradients and optimizer states per GPU. DDP keeps fp32 weights (autocast computes
    in bf16) and a gradient bucket copy when world > 1; DeepSpeed bf16 keeps bf16 weights and
    gradients and fp32 master weights + AdamW moments, sharded by ZeRO-2 (grads, optimizer) and
    ZeRO-3 (weights too)."""
    if strategy not in ZERO:
        raise KeyError(f"unknown strategy {strategy!r}; known: {', '.join(ZERO)}")
    zero = ZERO[strategy]
    if zero == 0:
        grads = 4.0 * trainable * (2 if world > 1 else 1)
        return {"weights": 4.0 * (trainable + frozen), "gradients": grads, "optimizer": 8.0 * trainable}
    w = 2.0 if bf16 else 4.0
    master = 4.0 if bf16 else 0.0
    weights = w * (trainable + frozen) / (world if zero == 3 else 1)
    grads = w * trainable / world + (w * DS_BUCKET_ELEMENTS * 2 if world > 1 else 0.0)
    return {"weights": weights, "gradients": grads, "optimizer": (8.0 + master) * trainable / world}


def host_bytes(expert_params: list[int], head_params: int, llm_params: int, strategy: str, bf16: bool,
               ranks_per_node: int) -> float:
    """Host RAM per node while a stage builds, loads and saves its model. Without ZeRO-3 every rank
    builds the whole model on the host first. Under ZeRO-3 every rank builds the head (fusion and
    projector) whole and reads the rest into its partitions a tensor range at a time (at most one
    LLM shard of bytes in flight); rank 0 alone also holds one part whole: a part with no weights
    on disk yet, which it builds for every rank (trainers/modeling/first_build.py), or the part or
    LLM shard it saves (trainers/modeling/saving.py: SAVE_SHARD_BYTES)."""
    if strategy not in ZERO:
        raise KeyError(f"unknown strategy {strategy!r}; known: {', '.join(ZERO)}")
    w = 2.0 if bf16 and ZERO[strategy] else 4.0
    if ZERO[strategy] < 3:
        return ranks_per_node * w * (sum(expert_params) + head_params + llm_params)
    flight = min(w * llm_params, SAVE_SHARD_BYTES)
    rank0 = max([w * n for n in expert_params] + [w * head_params, flight])
    return ranks_per_node * (w * head_params + flight) + rank0


def activation_bytes(parts: list[tuple[Saved, bool]], micro_batch: int) -> float:
    """Peak activation memory of one micro batch over the model's parts in forward order
    ((saved, checkpointed) each): while part i runs, what parts up to i saved plus its largest
    op's input and output; in backward, everything saved plus one gradient of the largest."""
    kept = [s.with_checkpointing() if ckpt else s.total for s, ckpt in parts]
    peak = 0
    for i, (s, _) in enumerate(parts):
        peak = max(peak, sum(kept[:i + 1]) + 2 * s.largest)
    if parts:
        peak = max(peak, sum(kept) + parts[-1][0].largest)
    return float(micro_batch * peak)


def measure_step_peak(step: Callable[[], Any], model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Peak bytes of tensors alive during `step()` on CPU: the model's weights, gradients and the
    optimizer's states that exist before it, plus the profiler's per-op allocations and frees
    summed in time order."""
    from torch.profiler import ProfilerActivity, profile

    before = sum(_nbytes(p) for p in model.parameters()) + sum(_nbytes(b) for b in model.buffers())
    before += sum(_nbytes(p.grad) for p in model.parameters() if p.grad is not None)
    if optimizer is not None:
        before += sum(_nbytes(t) for st in optimizer.state.values() for t in st.values()
                      if torch.is_tensor(t) and t.dim() > 0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    cur = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += ev.self_cpu_memory_usage
        peak = max(peak, cur)
    return before + peak
