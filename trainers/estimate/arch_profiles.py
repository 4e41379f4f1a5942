"""FLOPs, saved activations and parameter counts of a trial's parts at full size, with no weights and
no downloads: architectures are built on the meta device from their configs, given fake CPU tensors
(FakeTensorMode: CPU kernels are chosen as on a real run, e.g. fused attention, where meta tensors
take the math path) and run once under FlopCounterMode, one sample per pass (both scale with the
batch).

Parts are counted separately and cached by what determines them, so a study plan counts each
expert, each fusion head and each LLM shape once: an expert (forward; + backward when trained), the
fusion + projector head (trained), and the LLM (forward + backward: input gradients only when
frozen). The LLM's decoder layers are alike: it is counted with 1 and 2 layers and extrapolated."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from trainers.estimate.flops import flop_counter
from trainers.estimate.memory import Saved, count_saved
from trainers.spec import LLMSpec

# Hub LLMs whose architecture is known offline (their config.json facts); others need a local dir.
KNOWN_LLMS: dict[str, dict[str, Any]] = {
    "lmsys/vicuna-7b-v1.5": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                 max_position_embeddings=4096),
    # a 1.1B Llama-2-tokenizer model: the paper-scale study's proxy LLM (strategy.fidelity.proxy)
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                               num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                                               max_position_embeddings=2048),
    "lmsys/vicuna-13b-v1.5": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                                  num_attention_heads=40, num_key_value_heads=40, vocab_size=32000,
                                  max_position_embeddings=4096),
}
logger = logging.getLogger(__name__)
PROFILE_VERSION = 1  # bump when what is counted changes: stored counts of older versions are ignored
PRESET_VOCAB = 1024  # a tiny preset's word vocabulary comes from the data; this stands in for it
Precision = str  # "fp32" | "autocast" (DDP + bf16 autocast) | "bf16" (DeepSpeed bf16 weights)


class ArchError(ValueError):
    """An architecture that cannot be built offline: one line naming the setting."""


@dataclass(frozen=True)
class Profile:
    flops: int  # per sample, forward (+ backward as trained)
    saved: Saved  # per sample
    trainable: int
    frozen: int
    out_dim: int = 0
    tokens: int = 0


class _Head(nn.Module):
    def __init__(self, fusion: nn.Module, projector: nn.Module, aggregators: nn.Module | None) -> None:
        super().__init__()
        self.fusion, self.projector, self.aggregators = fusion, projector, aggregators

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        y = self.projector(self.fusion(feats))
        for block in (self.aggregators.blocks.values() if self.aggregators is not None else ()):
            y = y + block(y, feats)  # the LLM's hidden states at the visual tokens have this shape
        return y


def _llm_aggregators(fusion: str, options: dict[str, Any], in_dims: list[int], *, tokens: int, visual_tokens: int,
                     hidden: int) -> nn.Module | None:
    import math

    layers = tuple(options.get("llm_layers") or ()) if fusion == "sva" else ()
    if not layers:
        return None
    from experts.fusion.sva_layers import LLMLayerAggregators

    return LLMLayerAggregators(layers, in_dims, math.isqrt(tokens), visual_tokens=visual_tokens, hidden=hidden, heads=int(options.get("heads", 1)))


def llm_config(spec: LLMSpec, vocab_size: int | None = None):
    """The LLM's transformers config without downloading: a preset, a known hub id or a local dir."""
    from transformers import AutoConfig, LlamaConfig

    from trainers.modeling.llm import LLM_PRESETS

    if spec.preset is not None:
        if spec.preset not in LLM_PRESETS:
            raise ArchError(f"llm.preset: unknown preset {spec.preset!r}; known: {', '.join(sorted(LLM_PRESETS))}")
        return LlamaConfig(vocab_size=vocab_size or PRESET_VOCAB, **LLM_PRESETS[spec.preset])
    src = str(spec.source)
    if (Path(src).expanduser() / "config.json").is_file():
        return AutoConfig.from_pretrained(str(Path(src).expanduser()))
    if src in KNOWN_LLMS:
        return LlamaConfig(**KNOWN_LLMS[src])
    raise ArchError(f"llm.source {src!r}: architecture not known offline; give a local directory with config.json "
                    f"(known hub ids: {', '.join(KNOWN_LLMS)})")


def _fake(build: Callable[[], nn.Module], mode: FakeTensorMode, dtype: torch.dtype) -> nn.Module:
    """Build on the meta device, then give every parameter and buffer a fake CPU tensor."""
    with torch.device("meta"):
        module = build()
    with mode:
        for m in module.modules():
            for k, p in list(m._parameters.items()):
                if p is not None:
                    dt = dtype if p.is_floating_point() else p.dtype
                    m._parameters[k] = nn.Parameter(torch.empty(p.shape, dtype=dt), requires_grad=p.requires_grad)
            for k, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[k] = torch.empty(b.shape, dtype=dtype if b.is_floating_point() else b.dtype)
    return module


def _counts(module: nn.Module) -> tuple[int, int]:
    train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return train, sum(p.numel() for p in module.parameters()) - train


def default_cache_path() -> Path:
    """Where counts persist between plans ($EAGLE_PLAN_CACHE, else ~/.cache/eagle-explorer)."""
    env = os.environ.get("EAGLE_PLAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "eagle-explorer" / "arch_profiles.json"


def _versions() -> str:
    import timm
    import transformers

    return f"v{PROFILE_VERSION}/torch{torch.__version__}/transformers{transformers.__version__}/timm{timm.__version__}"


class ArchProfiler:
    """Counts parts of a trial at batch 1 on fake tensors. Counts are cached by what determines
    them (and the library versions) in memory and, given `cache_path`, in a JSON file, so a plan
    counts each architecture once and a second plan on this machine counts none. New counts reach
    the file on `save()` (a plan that is refused half-way writes nothing)."""

    def __init__(self, precision: Precision, cache_path: Path | None = None) -> None:
        if precision not in ("fp32", "autocast", "bf16"):
            raise ValueError(f"precision {precision!r}: use fp32, autocast or bf16")
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # a shape env: a data-dependent check (SigLIP2's `.item()` on its patch grid) becomes a
        # deferred assert instead of an error; shapes stay static
        self.mode = FakeTensorMode(shape_env=ShapeEnv(allow_scalar_outputs=True))
        self.cache: dict[str, Profile] = {}
        self.cache_path = cache_path
        self._stored: dict[str, Any] | None = None
        self._new: dict[str, Any] = {}  # counted here, not yet saved

    def _disk(self) -> dict[str, Any]:
        if self._stored is None:
            self._stored = {}
            if self.cache_path is not None and self.cache_path.is_file():
                try:
                    self._stored = json.loads(self.cache_path.read_text())
                except json.JSONDecodeError:
                    logger.warning("%s: not valid JSON; counting again", self.cache_path)
        return self._stored

    def _cached(self, key: dict[str, Any], make: Callable[[], Profile]) -> Profile:
        k = hashlib.sha256(json.dumps({**key, "versions": _versions()}, sort_keys=True, default=str)
                           .encode()).hexdigest()[:32]
        if k in self.cache:
            return self.cache[k]
        stored = self._disk().get(k)
        if stored is not None:
            self.cache[k] = Profile(**{**stored, "saved": Saved(**{**stored["saved"],
                                    "blocks": [tuple(b) for b in stored["saved"]["blocks"]]})})
            return self.cache[k]
        self.cache[k] = prof = make()
        self._new[k] = asdict(prof)
        return prof

    def save(self) -> None:
        """Add the new counts to the cache file (merged with what other profilers saved meanwhile)."""
        if self.cache_path is None or not self._new:
            return
        self._stored = None  # re-read: another profiler or plan may have saved since
        merged = {**self._disk(), **self._new}
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(merged))
        tmp.replace(self.cache_path)
        self._stored, self._new = merged, {}

    def _run(self, module: nn.Module, forward: Callable[[], torch.Tensor], backward: bool) -> tuple[int, Saved]:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "autocast" else nullcontext()
        counter = flop_counter()
        with self.mode, counter, count_saved(module) as saved:
            with autocast:
                out = forward()
            if backward:
                out.float().sum().backward()
        return counter.get_total_flops(), saved

    def expert(self, cfg, trained: bool) -> Profile:
        """One expert on one image at its input size: forward, + backward when trained."""
        import experts

        cfg = cfg.with_overrides(pretrained=False, freeze=not trained)

        def make() -> Profile:
            quiet = logging.getLogger("experts")
            level = quiet.level
            quiet.setLevel(logging.WARNING)  # the per-expert freeze lines are for real trials
            try:
                module = _fake(lambda: experts.build_expert(cfg), self.mode, self.dtype)
            finally:
                quiet.setLevel(level)
            module.train()
            with self.mode:
                images = torch.rand(1, 3, cfg.input_size, cfg.input_size, dtype=self.dtype)
            flops, saved = self._run(module, lambda: module(images), trained)
            return Profile(flops, saved, *_counts(module), out_dim=module.out_dim, tokens=module.num_tokens)

        return self._cached({"expert": cfg.model_dump(mode="json", exclude={"grad_checkpointing"}),
                             "trained": trained, "p": self.precision}, make)

    def head(self, in_dims: list[int], tokens: int, grads_in: list[bool], *, fusion: str, options: dict[str, Any],
             projector: str, hidden: int) -> Profile:
        """Fusion + projector (+ SVA's LLM layer aggregators, on the projected tokens as queries),
        trained, on one sample's expert features."""
        import experts
        from trainers.modeling.projector import build_projector

        def make() -> Profile:
            fuse = [None]

            def build() -> nn.Module:
                fuse[0] = experts.build_fusion(fusion, in_dims, tokens, **options)
                return _Head(fuse[0], build_projector(projector, fuse[0].out_dim, hidden),
                             _llm_aggregators(fusion, options, in_dims, tokens=tokens, visual_tokens=fuse[0].out_tokens, hidden=hidden))

            module = _fake(build, self.mode, self.dtype)
            module.train()
            with self.mode:
                feats = [torch.rand(1, tokens, d, dtype=self.dtype, requires_grad=g) for d, g in zip(in_dims, grads_in)]
            flops, saved = self._run(module, lambda: module(feats), True)
            return Profile(flops, saved, *_counts(module), out_dim=hidden, tokens=fuse[0].out_tokens)

        return self._cached({"head": [in_dims, tokens, grads_in, fusion, options, projector, hidden],
                             "p": self.precision}, make)

    def llm(self, config, seq_len: int, trained: bool) -> Profile:
        """The LLM on one sequence of seq_len embeddings (loss over all positions), forward + backward
        to its inputs (and its weights when trained), extrapolated from 1 and 2 decoder layers."""
        from transformers import AutoModelForCausalLM

        layers = int(config.num_hidden_layers)

        def one(n: int) -> tuple[int, Saved]:
            cfg = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": n})
            cfg._attn_implementation = "sdpa"
            module = _fake(lambda: AutoModelForCausalLM.from_config(cfg), self.mode, self.dtype)
            module.requires_grad_(trained)
            module.train()
            with self.mode:
                embeds = torch.rand(1, seq_len, cfg.hidden_size, dtype=self.dtype, requires_grad=True)
                labels = torch.zeros(1, seq_len, dtype=torch.long)
            return self._run(module, lambda: module(inputs_embeds=embeds, labels=labels, use_cache=False).loss, True)

        def make() -> Profile:
            (f1, s1), (f2, s2) = one(1), one(2)
            with torch.device("meta"):
                full = AutoModelForCausalLM.from_config(config)
            n = sum(p.numel() for p in full.parameters())
            return Profile(f1 + (f2 - f1) * (layers - 1), s1.scaled(1, layers, s2),
                           n if trained else 0, 0 if trained else n, out_dim=int(config.hidden_size), tokens=seq_len)

        return self._cached({"llm": config.to_json_string(), "seq": seq_len, "trained": trained,
                             "p": self.precision}, make)
