"""EagleModel: vision mixture -> projector -> causal LM, image tokens spliced at IMAGE_TOKEN."""
from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoTokenizer

from experts.loading import SafetensorsState
from trainers.modeling.llm import load_causal_lm
from trainers.modeling.partitions import load_state, partitioned
from trainers.modeling.projector import build_projector

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"  # same string as trainers.data.templates.IMAGE_TOKEN
CONFIG_NAME = "eagle.json"


class EagleModel(nn.Module):
    """`forward(input_ids, attention_mask, images, labels)` -> the LLM's output (loss when labels given).

    Each sequence holds at most one IMAGE_TOKEN; it is replaced by mixture.num_tokens projected
    vision embeddings whose labels are IGNORE_INDEX."""

    def __init__(self, mixture: nn.Module, projector_type: str, llm: nn.Module, tokenizer,
                 *, fusion_name: str = "channel_concat", fusion_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.mixture = mixture
        self.llm = llm
        self.tokenizer = tokenizer
        self.projector_type = projector_type
        self.fusion_name = fusion_name
        self.fusion_options = dict(fusion_options or {})
        hidden = llm.get_input_embeddings().embedding_dim
        self.projector = build_projector(projector_type, mixture.out_dim, hidden)
        ids = tokenizer(IMAGE_TOKEN, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"the tokenizer encodes {IMAGE_TOKEN} as {len(ids)} tokens; it must be one")
        self.image_token_id = int(ids[0])
        positions = getattr(llm.config, "max_position_embeddings", None) or getattr(llm.config, "n_positions", None)
        if positions is None:  # no guessed default: sequence limits are checked against it
            raise ValueError(f"{type(llm).__name__}: its config gives no max_position_embeddings")
        self.max_length = int(positions)  # the LLM's positions: image tokens included
        self._attach_llm_aggregators(hidden)

    def _attach_llm_aggregators(self, hidden: int) -> None:
        """SVA's `llm_layers`: per-layer aggregators, kept in the fusion module (trained, frozen and
        saved with it) and hooked into the LLM's decoder layers."""
        layers = tuple(sorted(self.fusion_options.get("llm_layers") or ())) if self.fusion_name == "sva" else ()
        if not layers:
            return
        from experts.fusion.sva_layers import LLMLayerAggregators, decoder_layers

        agg = LLMLayerAggregators(layers, [e.out_dim for e in self.mixture.experts], self.mixture.grid,
                                  visual_tokens=self.num_image_tokens, hidden=hidden, heads=int(self.fusion_options.get("heads", 1)))
        agg.attach(decoder_layers(self.llm))
        self.mixture.fusion.add_module("llm_aggregators", agg)

    @property
    def llm_aggregators(self) -> nn.Module | None:
        return getattr(self.mixture.fusion, "llm_aggregators", None)

    @property
    def num_image_tokens(self) -> int:
        return int(self.mixture.num_tokens)

    def encode_images(self, images: Tensor, with_features: bool = False):
        """uint8 images (or floats in [0, 1]) -> projected tokens (and, with_features, each expert's
        tokens before fusion); the float conversion happens here, on the device, and each expert
        applies its own resize and mean/std."""
        per_expert = self.mixture.expert_features(self.prepare_images(images))
        out = self.project(self.mixture.fusion(per_expert))
        return (out, per_expert) if with_features else out

    def prepare_images(self, images: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) images as the experts take them."""
        # DeepSpeed bf16 casts the weights: images follow the experts' dtype
        dtype = next(self.mixture.parameters()).dtype
        return images.to(dtype).div_(255.0) if images.dtype == torch.uint8 else images.to(dtype)

    def encode_features(self, features: Tensor, with_features: bool = False):
        """Projected tokens from the experts' outputs given precomputed (trainers/caches/features.py):
        [B, T, sum of out_dims], the experts' outputs concatenated along channels in mixture order."""
        dims = [e.out_dim for e in self.mixture.experts]
        if features.shape[-1] != sum(dims):
            raise ValueError(f"cached features have {features.shape[-1]} channels; the experts give {sum(dims)} ({dims})")
        dtype = next(self.mixture.fusion.parameters(), next(self.mixture.parameters())).dtype
        per_expert = list(features.to(dtype).split(dims, dim=-1))
        out = self.project(self.mixture.fusion(per_expert))
        return (out, per_expert) if with_features else out

    def project(self, fused: Tensor) -> Tensor:
        return self.projector(fused.to(next(self.projector.parameters()).dtype))

    def splice(self, input_ids: Tensor, images: Tensor | None, features: Tensor | None = None) -> Tensor:
        """inputs_embeds: the text embeddings with the image slots (IMAGE_TOKEN positions, expanded
        to num_image_tokens per image by trainers.data.collate.expand_image_tokens) filled, in
        row-major order, with the image tokens of `images` (one image per sequence that has slots),
        or of the experts' cached `features` of those images. No device-to-host read."""
        return self._splice(input_ids, images, features)[0]

    def _splice(self, input_ids: Tensor, images: Tensor | None,
                features: Tensor | None = None) -> tuple[Tensor, list[Tensor] | None]:
        """splice's embeddings and the experts' features (None without images)."""
        text = self.llm.get_input_embeddings()(input_ids.clamp_min(0))
        if features is not None:
            images = features  # one row per image either way
        if images is None:
            return text, None
        slots = input_ids == self.image_token_id
        if input_ids.device.type == "cpu":  # checking costs a device sync elsewhere; the collate checked
            per_row = slots.sum(1)
            if bool((per_row % self.num_image_tokens).any()) or \
                    int(per_row.sum()) != images.shape[0] * self.num_image_tokens:  # packed rows hold several
                raise ValueError(f"image slots per sequence {per_row.tolist()} do not match {images.shape[0]} images "
                                 f"of {self.num_image_tokens} tokens (expand each {IMAGE_TOKEN} first)")
        encode = self.encode_images if features is None else self.encode_features
        feats, per_expert = encode(images, with_features=True)
        # in order, no count read back (CUDA too)
        return text.masked_scatter(slots.unsqueeze(-1), feats.to(text.dtype)), per_expert

    def _aggregating(self, input_ids: Tensor, per_expert: list[Tensor] | None):
        """The context in which the LLM's layer aggregators (SVA llm_layers) see this batch."""
        agg = self.llm_aggregators
        if agg is None or per_expert is None:
            return nullcontext()
        return agg.context(per_expert, input_ids == self.image_token_id)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, images: Tensor | None = None,
                labels: Tensor | None = None, position_ids: Tensor | None = None, features: Tensor | None = None,
                **_: Any):
        """A collated batch (trainers.data.collate): padded, or packed with position_ids (varlen
        attention: the LLM builds the per-sequence causal mask from them); `features` in place of
        images when stage 2 reads the experts' outputs from the feature cache."""
        embeds, per_expert = self._splice(input_ids, images, features)
        with self._aggregating(input_ids, per_expert):
            return self.llm(inputs_embeds=embeds, attention_mask=None if position_ids is not None else attention_mask,
                            position_ids=position_ids, labels=labels, use_cache=False)

    @torch.no_grad()
    def generate(self, images: Tensor, prompts: list[str] | list[list[int]], max_new_tokens: int = 16,
                 stop_token_ids: list[int] | None = None) -> list[str]:
        """Greedy, batched (left padding), with the KV cache. Prompts are strings (tokenized without
        special tokens) or token id lists (e.g. trainers.data.templates.encode_prompt)."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {images.shape[0]} images")
        tok = self.tokenizer
        from trainers.data.collate import expand_image_tokens

        seqs = [torch.tensor(p if isinstance(p, list) else tok(p, add_special_tokens=False)["input_ids"],
                             dtype=torch.long) for p in prompts]
        seqs = [expand_image_tokens(s, s, self.image_token_id, self.num_image_tokens)[0] for s in seqs]
        with_image = [i for i, s in enumerate(seqs) if bool((s == self.image_token_id).any())]
        dev = next(self.projector.parameters()).device
        longest = max(s.numel() for s in seqs)
        if longest + max_new_tokens > self.max_length:
            raise ValueError(f"a prompt of {longest} tokens (image tokens included) + {max_new_tokens} new tokens "
                             f"exceeds the LLM's {self.max_length} positions")
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(seqs), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, longest - s.numel():] = s
            mask[i, longest - s.numel():] = 1
        ids = ids.to(dev)
        embeds, per_expert = self._splice(ids, images[with_image].to(dev) if with_image else None)
        eos = stop_token_ids or ([tok.eos_token_id] if tok.eos_token_id is not None else None)
        with self._aggregating(ids, per_expert):  # the prompt's pass; cached decoding steps skip it
            out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask.to(dev),
                                    max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                                    pad_token_id=pad, eos_token_id=eos, synced_gpus=self.partitioned_across_ranks())
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]

    def partitioned_across_ranks(self) -> bool:
        """ZeRO-3 partitions over several processes: every forward gathers collectively, so generation
        runs in lockstep (each rank steps until every rank's sequences are done)."""
        from trainers.training import distributed as D
        return D.active() and hasattr(next(self.llm.parameters()), "ds_id")

    # ----- persistence -----
    def save_pretrained(self, out_dir: str | Path, *, is_main: bool = True) -> None:
        """Every rank calls it when the weights are ZeRO-3 partitions (trainers/modeling/saving.py
        gathers one submodule at a time; rank 0 writes); otherwise only `is_main` writes."""
        from trainers.modeling.saving import save_llm, save_part, whole_state

        if not partitioned(self) and not is_main:
            return
        out = Path(out_dir)
        for i, expert in enumerate(self.mixture.experts):
            state = whole_state(expert, is_main=is_main)
            if is_main:
                expert.save_pretrained(out / "experts" / str(i), state=state)
        save_part(self.mixture.fusion, out / "fusion.safetensors", is_main=is_main)
        save_part(self.projector, out / "projector.safetensors", is_main=is_main)
        save_llm(self.llm, out / "llm", is_main=is_main)
        if not is_main:
            return
        self.tokenizer.save_pretrained(str(out / "tokenizer"))
        cfg = {"num_experts": len(self.mixture.experts), "fusion": {"name": self.fusion_name,
               "options": self.fusion_options}, "projector": self.projector_type, "image_token": IMAGE_TOKEN,
               "attn_implementation": self.llm.config._attn_implementation}
        (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))

    @classmethod
    def from_pretrained(cls, src: str | Path, llm_grad_checkpointing: bool = False,
                        dtype: torch.dtype = torch.float32) -> "EagleModel":
        """The saved model with every weight in `dtype` (the LLM read straight into it)."""
        import experts

        src = Path(src)
        if not (src / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{src}: no {CONFIG_NAME} (not a saved EagleModel)")
        cfg = json.loads((src / CONFIG_NAME).read_text())
        loaded = [experts.load_expert(src / "experts" / str(i), load_state, dtype) for i in range(cfg["num_experts"])]
        mixture = experts.VisionMixture(loaded, cfg["fusion"]["name"], cfg["fusion"]["options"]).to(dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(src / "tokenizer"))
        llm = load_causal_lm(src / "llm", dtype=dtype, attn_implementation=cfg.get("attn_implementation", "sdpa"))
        if llm_grad_checkpointing:
            from trainers.modeling.llm import enable_checkpointing

            enable_checkpointing(llm)
        model = cls(mixture, cfg["projector"], llm, tokenizer, fusion_name=cfg["fusion"]["name"],
                    fusion_options=cfg["fusion"]["options"])
        if (src / "fusion.safetensors").is_file():  # after the model: it holds the LLM layer aggregators too
            load_state(mixture.fusion, SafetensorsState(src / "fusion.safetensors"))
        load_state(model.projector, SafetensorsState(src / "projector.safetensors"))
        return model.to(dtype)
