"""Mini-Gemini patch info mining (compared in Eagle; keeps T tokens and the main expert's width):
the first expert's tokens query the other experts by cross-attention, global or restricted to each
query's neighbourhood in the other grids, and the result is added back onto the queries."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from .base import Fusion, FusionError, FusionOptions


class MiniGeminiOptions(FusionOptions):
    local: bool = False  # True: each query sees only a window x window patch around its position
    window: int = Field(default=3, gt=0)  # side of the local window (odd); ignored when local=False
    heads: int = Field(default=1, gt=0)  # attention heads; must divide in_dims[0]

    @field_validator("window")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd so the window is centred on the query's position")
        return v


class MiniGemini(Fusion):
    """out = y + MLP(LN(y)), y = q_in + O(attn(Q(LN(q_in)), K_i(LN(x_i)), V_i(LN(x_i))));
    with one expert the keys/values come from that expert itself (self-mining)."""

    name = "mini_gemini"
    Options = MiniGeminiOptions

    def __init__(self, in_dims: list[int], num_tokens: int, **options) -> None:
        super().__init__(in_dims, num_tokens, **options)
        d = self.in_dims[0]
        if d % self.options.heads:
            raise FusionError(f"fusion {self.name!r}: option 'heads'={self.options.heads} does not divide the query width {d}")
        self.out_dim = d
        self.out_tokens = num_tokens
        kv_dims = self.in_dims[1:] or self.in_dims[:1]
        self.q_norm = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv_norm = nn.ModuleList(nn.LayerNorm(k) for k in kv_dims)
        self.k = nn.ModuleList(nn.Linear(k, d) for k in kv_dims)  # keys/values projected to query width
        self.v = nn.ModuleList(nn.Linear(k, d) for k in kv_dims)
        self.o = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def _split(self, x: Tensor) -> Tensor:  # [..., d] -> [..., heads, d/heads]
        return x.unflatten(-1, (self.options.heads, -1))

    def fuse(self, feats: list[Tensor]) -> Tensor:
        queries = feats[0]
        sources = feats[1:] or feats[:1]
        q = self.q(self.q_norm(queries))
        keys, values = [], []
        for norm, k, v, x in zip(self.kv_norm, self.k, self.v, sources):
            x = norm(x)
            keys.append(k(x))
            values.append(v(x))
        mined = self._local(q, keys, values) if self.options.local else self._global(q, keys, values)
        y = queries + self.o(mined)
        return y + self.mlp(self.mlp_norm(y))

    def _global(self, q: Tensor, keys: list[Tensor], values: list[Tensor]) -> Tensor:
        # [B, heads, T, dh] against all tokens of all other experts
        qh = self._split(q).transpose(1, 2)
        kh = self._split(torch.cat(keys, dim=1)).transpose(1, 2)
        vh = self._split(torch.cat(values, dim=1)).transpose(1, 2)
        return F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).flatten(2)

    def _local(self, q: Tensor, keys: list[Tensor], values: list[Tensor]) -> Tensor:
        """Each query attends the window x window patch around its own position in every source grid.
        Loops over window offsets on padded grids (views, no unfold copy) so memory stays O(B*T*d)."""
        g, w = self.grid, self.options.window
        r = w // 2
        qg = self._split(q).unflatten(1, (g, g))  # [B, g, g, heads, dh]
        pad = (0, 0, 0, 0, r, r, r, r)
        kgs = [F.pad(self._split(k).unflatten(1, (g, g)), pad) for k in keys]
        vgs = [F.pad(self._split(v).unflatten(1, (g, g)), pad) for v in values]
        offsets = [(dy, dx) for dy in range(w) for dx in range(w)]
        scores = torch.stack(
            [(qg * kg[:, dy:dy + g, dx:dx + g]).sum(-1) for kg in kgs for dy, dx in offsets], dim=-1
        ) * qg.shape[-1] ** -0.5  # [B, g, g, heads, n*w*w]
        idx = torch.arange(g, device=q.device)
        inside = [((idx + d - r >= 0) & (idx + d - r < g)) for d in range(w)]
        valid = torch.stack([inside[dy][:, None] & inside[dx][None, :] for dy, dx in offsets], dim=-1)
        valid = valid.repeat(1, 1, len(kgs))[:, :, None, :]  # padding is never a key
        attn = scores.masked_fill(~valid, float("-inf")).softmax(dim=-1)
        out = torch.zeros_like(qg)
        i = 0
        for vg in vgs:
            for dy, dx in offsets:
                out = out + attn[..., i:i + 1] * vg[:, dy:dy + g, dx:dx + g]
                i += 1
        return out.flatten(1, 2).flatten(2)
