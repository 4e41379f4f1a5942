"""Padding in SFT micro batches: the share of the LLM's input positions that are padding over one
epoch of studies/trials/tiny.yaml's SFT data (image tokens expanded), plain order vs modality-length
grouping vs padding-free packing, at the trial's batch sizes and at a LLaVA-like global batch.
Prints ONE JSON line. `python -m benchmarks.padding`"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "studies" / "trials" / "tiny.yaml"


def epoch_padding(ds, collate, hp, lengths) -> float:
    from trainers.training.loop import DistEnv, accumulation_steps
    from trainers.training.loader import rank_micro_batches

    accum = accumulation_steps(hp, 1)
    tokens = positions = 0
    for step in range(len(ds) // hp.global_batch_size):
        for mb in rank_micro_batches(len(ds), step, hp, DistEnv(), accum=accum, seed=0, lengths=lengths):
            batch = collate([ds[i] for i in mb])
            tokens += batch["num_tokens"]
            positions += batch["input_ids"].numel()
    return round(1.0 - tokens / positions, 4)


def main() -> int:
    from trainers.data.collate import make_collate
    from trainers.data.llava import LlavaDataset
    from trainers.spec import StageSpec, parse_trial_spec
    from trainers.stages.recipes import build_model, build_trial_tokenizer, resolve_data, resolve_experts

    spec = parse_trial_spec(yaml.safe_load(TINY.read_text()), str(TINY))
    figures: dict = {"benchmark": "padding", "data": "tiny.yaml synthetic sft"}
    with tempfile.TemporaryDirectory() as tmp:
        data = resolve_data(spec, Path(tmp))
        tok = build_trial_tokenizer(spec.llm, data, Path(tmp) / "tok")
        model = build_model(resolve_experts(spec), spec.fusion.name, spec.fusion.options, spec.projector.type,
                            llm_spec=spec.llm, tokenizer=tok, seed=spec.seed)
        ds = LlavaDataset(data.sft, data.image_folder, data.image_size, tokenizer=tok, template=spec.llm.template, max_length=spec.llm.max_length,
                          bad_images={})
        args = (tok.pad_token_id, model.image_token_id, model.num_image_tokens)
        figures["image_tokens"] = model.num_image_tokens
        sft = spec.train.stages["sft"]
        for name, hp in (("trial", sft), ("global128_micro16", StageSpec(global_batch_size=128, micro_batch_size=16))):
            hp = hp.model_copy(update={"global_batch_size": min(hp.global_batch_size, len(ds))})
            figures[name] = {"global_batch": hp.global_batch_size, "micro_batch": hp.micro_batch_size,
                             "padded": epoch_padding(ds, make_collate(*args), hp, None),
                             "grouped": epoch_padding(ds, make_collate(*args), hp, ds.lengths),
                             "packed": epoch_padding(ds, make_collate(*args, pack=True), hp, None)}
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
