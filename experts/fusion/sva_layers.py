"""Cambrian-1's multi-layer vision aggregation (arXiv 2406.16860): at chosen LLM decoder layers the
hidden states at the visual-token positions query the experts' features again, each token its own
spatial window of every expert's grid (as the SVA's queries do before the LLM), and the result is
added residually to those hidden states. Each layer's output projection starts at zero, so an
untrained model is exactly the single-aggregation one.

The aggregators are attached to the LLM with forward pre-hooks on its decoder layers; a forward
sets the context (the expert features, the visual-token mask) for its duration. transformers
checkpoints a layer's `forward`, while hooks run in `__call__`: the aggregation is outside the
activation checkpoint and never re-run in backward."""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .base import FusionError
from .sva import spatial_windows, window_attention


class LayerAggregator(nn.Module):
    """Queries [N, t*t, hidden] (one per visual token, row-major) over windows of g/t x g/t tokens in
    each expert's g x g grid -> the residual [N, t*t, hidden] (zero at init)."""

    def __init__(self, in_dims: list[int], hidden: int, side: int, window: int, heads: int) -> None:
        super().__init__()
        self.side, self.window, self.heads = side, window, heads
        self.kv_norm = nn.ModuleList(nn.LayerNorm(d) for d in in_dims)
        self.kv = nn.ModuleList(nn.Linear(d, 2 * hidden) for d in in_dims)
        self.key_pos = nn.Parameter(torch.zeros(len(in_dims), window * window, hidden))
        self.q_norm = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.o.weight)  # starts as the single-aggregation model
        nn.init.zeros_(self.o.bias)

    def forward(self, queries: Tensor, feats: list[Tensor]) -> Tensor:
        dtype = self.q.weight.dtype
        keys, values = [], []
        for i, (norm, kv, x) in enumerate(zip(self.kv_norm, self.kv, feats)):
            k, v = spatial_windows(kv(norm(x.to(dtype))), self.side, self.window).chunk(2, dim=-1)
            keys.append(k + self.key_pos[i])
            values.append(v)
        q = self.q(self.q_norm(queries.to(dtype)))
        return self.o(window_attention(q, torch.cat(keys, 2), torch.cat(values, 2), self.heads))


def check_llm_layers(layers: tuple[int, ...], grid: int, visual_tokens: int, *, num_layers: int | None = None,
                     hidden: int | None = None, heads: int = 1) -> None:
    """The option `llm_layers` against the visual tokens, the LLM's depth and width (where known);
    one FusionError line otherwise."""
    side = math.isqrt(visual_tokens)
    if side * side != visual_tokens or grid % side:
        raise FusionError(f"fusion 'sva': option 'llm_layers' needs the {visual_tokens} visual tokens to be a "
                          f"square grid dividing the experts' {grid}x{grid} grid")
    if num_layers is not None and layers and max(layers) >= num_layers:
        raise FusionError(f"fusion 'sva': option 'llm_layers'={sorted(layers)}: layer {max(layers)} is out of range, "
                          f"the LLM has {num_layers} decoder layers (0..{num_layers - 1})")
    if hidden is not None and hidden % heads:
        raise FusionError(f"fusion 'sva': option 'heads'={heads} does not divide the LLM's width {hidden}")


class LLMLayerAggregators(nn.Module):
    """One LayerAggregator per LLM layer in `layers`; `attach(decoder_layers)` hooks them in and
    `context(feats, slots)` feeds them during a forward (slots: [B, L] bool, the visual tokens)."""

    def __init__(self, layers: tuple[int, ...], in_dims: list[int], grid: int, *, visual_tokens: int, hidden: int,
                 heads: int) -> None:
        super().__init__()
        check_llm_layers(layers, grid, visual_tokens, hidden=hidden, heads=heads)
        side = math.isqrt(visual_tokens)
        self.layers = tuple(layers)
        self.grid, self.visual_tokens = grid, visual_tokens
        self.blocks = nn.ModuleDict({str(i): LayerAggregator(in_dims, hidden, side, grid // side, heads)
                                     for i in self.layers})
        self._context: tuple[list[Tensor], Tensor] | None = None
        self._handles: list = []

    def attach(self, decoder_layers: nn.ModuleList) -> None:
        check_llm_layers(self.layers, self.grid, self.visual_tokens, num_layers=len(decoder_layers))
        for h in self._handles:
            h.remove()
        self._handles = [decoder_layers[i].register_forward_pre_hook(self._hook(str(i)), with_kwargs=True)
                         for i in self.layers]

    @contextmanager
    def context(self, feats: list[Tensor], slots: Tensor) -> Iterator[None]:
        self._context = (feats, slots)
        try:
            yield
        finally:
            self._context = None

    def residual(self, layer: int, hidden: Tensor, feats: list[Tensor], slots: Tensor) -> Tensor:
        """hidden [B, L, D] with layer `layer`'s aggregation added at the visual tokens."""
        d = hidden.shape[-1]
        queries = hidden[slots].view(feats[0].shape[0], self.visual_tokens, d)  # row-major, images in order
        delta = self.blocks[str(layer)](queries, feats).to(hidden.dtype)
        return hidden.masked_scatter(slots.unsqueeze(-1), (queries + delta).reshape(-1, d))

    def _hook(self, key: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if self._context is None:
                return None
            feats, slots = self._context
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.shape[:2] != slots.shape:  # a cached decoding step: no visual tokens in it
                return None
            out = self.residual(int(key), hidden, feats, slots)
            return ((out, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": out})
        return hook


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The causal LM's decoder layers (transformers' `get_decoder().layers`)."""
    layers = getattr(llm.get_decoder(), "layers", None) if hasattr(llm, "get_decoder") else None
    if not isinstance(layers, nn.ModuleList):
        raise FusionError(f"fusion 'sva': option 'llm_layers': {type(llm).__name__} exposes no decoder layers")
    return layers
