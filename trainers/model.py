"""EagleModel: vision mixture -> projector -> causal LM, image tokens spliced at IMAGE_TOKEN."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainers.projector import build_projector

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"  # same string as trainers.data.templates.IMAGE_TOKEN
CONFIG_NAME = "eagle.json"


def load_state(module: nn.Module, state: dict[str, Tensor]) -> None:
    """Strict load_state_dict that also fills ZeRO-3-partitioned parameters (gathered for the copy,
    rank 0's values kept, partitioned again after)."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        module.load_state_dict(state, strict=True)
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        module.load_state_dict(state, strict=True)


class EagleModel(nn.Module):
    """`forward(input_ids, attention_mask, images, labels)` -> the LLM's output (loss when labels given).

    Each sequence holds at most one IMAGE_TOKEN; it is replaced by mixture.num_tokens projected
    vision embeddings whose labels are IGNORE_INDEX."""

    def __init__(self, mixture: nn.Module, projector_type: str, llm: nn.Module, tokenizer,
                 fusion_name: str = "channel_concat", fusion_options: dict[str, Any] | None = None) -> None:
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
        self.max_length = int(getattr(llm.config, "max_position_embeddings", 4096))

    @property
    def num_image_tokens(self) -> int:
        return int(self.mixture.num_tokens)

    def encode_images(self, images: Tensor) -> Tensor:
        # DeepSpeed bf16 casts the weights: images follow the experts' dtype
        images = images.to(next(self.mixture.parameters()).dtype)
        feats = self.mixture(images)
        dtype = next(self.projector.parameters()).dtype
        return self.projector(feats.to(dtype))

    def splice(self, input_ids: Tensor, attention_mask: Tensor, images: Tensor | None,
               labels: Tensor | None = None, padding_side: str = "right") -> dict[str, Tensor]:
        """inputs_embeds/attention_mask/labels with each IMAGE_TOKEN replaced by the image embeddings."""
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids and attention_mask must be [B, L] alike, got {tuple(input_ids.shape)} "
                             f"and {tuple(attention_mask.shape)}")
        embed = self.llm.get_input_embeddings()
        has_token = (input_ids == self.image_token_id) & attention_mask.bool()
        counts = has_token.sum(1)
        if (counts > 1).any():
            raise ValueError(f"a sequence holds {int(counts.max())} {IMAGE_TOKEN} tokens; at most one is supported")
        img = None
        if bool(counts.any()):
            if images is None:
                raise ValueError(f"input_ids contain {IMAGE_TOKEN} but no images were given")
            img = self.encode_images(images)
        text = embed(input_ids.clamp_min(0))
        seqs, labs = [], []
        for i in range(input_ids.shape[0]):
            keep = attention_mask[i].bool()
            e, ids = text[i][keep], input_ids[i][keep]
            lab = labels[i][keep] if labels is not None else torch.full_like(ids, IGNORE_INDEX)
            if counts[i] == 1:
                p = int((ids == self.image_token_id).nonzero()[0, 0])
                e = torch.cat([e[:p], img[i].to(e.dtype), e[p + 1:]])
                fill = torch.full((img.shape[1],), IGNORE_INDEX, dtype=lab.dtype, device=lab.device)
                lab = torch.cat([lab[:p], fill, lab[p + 1:]])
            if e.shape[0] > self.max_length:
                e, lab = e[: self.max_length], lab[: self.max_length]
            seqs.append(e)
            labs.append(lab)
        longest = max(s.shape[0] for s in seqs)
        b, hidden = len(seqs), text.shape[-1]
        out_e = text.new_zeros(b, longest, hidden)
        out_m = attention_mask.new_zeros(b, longest)
        out_l = torch.full((b, longest), IGNORE_INDEX, dtype=torch.long, device=input_ids.device)
        for i, (e, lab) in enumerate(zip(seqs, labs)):
            n = e.shape[0]
            sl = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
            out_e[i, sl], out_m[i, sl], out_l[i, sl] = e, 1, lab
        return {"inputs_embeds": out_e, "attention_mask": out_m, "labels": out_l}

    def forward(self, input_ids: Tensor, attention_mask: Tensor, images: Tensor | None = None,
                labels: Tensor | None = None, **_: Any):
        x = self.splice(input_ids, attention_mask, images, labels)
        return self.llm(inputs_embeds=x["inputs_embeds"], attention_mask=x["attention_mask"],
                        labels=x["labels"] if labels is not None else None, use_cache=False)

    @torch.no_grad()
    def generate(self, images: Tensor, prompts: list[str] | list[list[int]], max_new_tokens: int = 16,
                 stop_token_ids: list[int] | None = None) -> list[str]:
        """Greedy, batched (left padding), with the KV cache. Prompts are strings (tokenized without
        special tokens) or token id lists (e.g. trainers.data.templates.encode_prompt)."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {images.shape[0]} images")
        tok = self.tokenizer
        seqs = [p if isinstance(p, list) else tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        dev = next(self.projector.parameters()).device
        longest = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(seqs), longest), pad, dtype=torch.long, device=dev)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, longest - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, longest - len(s):] = 1
        x = self.splice(ids, mask, images.to(dev), padding_side="left")
        eos = stop_token_ids or ([tok.eos_token_id] if tok.eos_token_id is not None else None)
        out = self.llm.generate(inputs_embeds=x["inputs_embeds"], attention_mask=x["attention_mask"],
                                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                                pad_token_id=pad, eos_token_id=eos)
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]

    # ----- persistence -----
    def save_pretrained(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for i, expert in enumerate(self.mixture.experts):
            expert.save_pretrained(out / "experts" / str(i))
        fusion_state = {k: v.detach().contiguous() for k, v in self.mixture.fusion.state_dict().items()}
        if fusion_state:
            save_file(fusion_state, str(out / "fusion.safetensors"))
        save_file({k: v.detach().contiguous() for k, v in self.projector.state_dict().items()},
                  str(out / "projector.safetensors"))
        self.llm.save_pretrained(str(out / "llm"), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out / "tokenizer"))
        cfg = {"num_experts": len(self.mixture.experts), "fusion": {"name": self.fusion_name,
               "options": self.fusion_options}, "projector": self.projector_type, "image_token": IMAGE_TOKEN}
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
        loaded = [experts.load_expert(src / "experts" / str(i), load_state) for i in range(cfg["num_experts"])]
        mixture = experts.VisionMixture(loaded, cfg["fusion"]["name"], cfg["fusion"]["options"]).to(dtype)
        if (src / "fusion.safetensors").is_file():
            load_state(mixture.fusion, load_file(str(src / "fusion.safetensors")))
        tokenizer = AutoTokenizer.from_pretrained(str(src / "tokenizer"))
        llm = AutoModelForCausalLM.from_pretrained(str(src / "llm"), dtype=dtype)
        if llm_grad_checkpointing:
            from trainers.llm import enable_checkpointing

            enable_checkpointing(llm)
        model = cls(mixture, cfg["projector"], llm, tokenizer, cfg["fusion"]["name"], cfg["fusion"]["options"])
        load_state(model.projector, load_file(str(src / "projector.safetensors")))
        return model.to(dtype)
