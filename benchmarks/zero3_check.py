"""ZeRO-3 build and evaluation on the device, in one torchrun job (benchmarks.gpu_check runs it on 1
GPU, and on 2 where there are two; tests/trainers/test_zero3.py runs it on CPU with 2 gloo ranks).
In the trial's precision (bf16 on a GPU), no parameter whole on any rank and the gathered weights
equal to a whole build's, for each way a stage's model is built:
- fresh (stage 1, stage 2, the baseline): an expert and the LLM read from local pretrained
  directories, a random-init expert and projector, each part partitioned as soon as it exists;
- loaded from disk (the stage after another: EagleModel.from_pretrained inside the build context);
- a stage-1 cached expert (stage 2), partitioned before the next is read;
and evaluation on the live partitions (the DeepSpeed engine's hooks; lockstep generation, the ranks
holding different item counts) gives the loss and the predictions of the same weights whole,
without gathering the model in place.
Rank 0 prints ONE JSON line; exit 1 when a check fails.
`torchrun --nproc-per-node N -m benchmarks.zero3_check WORKDIR`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

TEXTS = ["a red circle on a white background", "what colour is the shape ?", "red", "blue square",
         "how many circles are there ?", "three", "the word is cat"]
BENCHES = ["gqa", "pope"]


def write_sources(work: Path) -> None:
    """A transformers CLIP tower and a tiny Llama saved under `work` (the pretrained sources)."""
    from experts import build_expert, get_preset
    from trainers.data.tokenizer import build_word_tokenizer
    from trainers.modeling.llm import build_llm
    from trainers.spec import LLMSpec

    torch.manual_seed(0)
    build_expert(get_preset("tiny-clip")).backbone.save_pretrained(work / "clip_hf")
    tok = build_word_tokenizer(TEXTS, work / "tok_src")
    build_llm(LLMSpec(preset="tiny-llama"), tok, seed=7).save_pretrained(work / "llm")


def fresh_model(work: Path, tag: str, dtype: torch.dtype, engine=None):
    """The fresh stage model of the sources (stages.build_model, as stage 1/2 and the baseline build)."""
    from experts import get_preset
    from trainers.data.tokenizer import build_word_tokenizer
    from trainers.spec import LLMSpec
    from trainers.stages.recipes import build_model

    tok = build_word_tokenizer(TEXTS, work / f"tok_{tag}")
    clip = get_preset("tiny-clip").with_overrides(source=str(work / "clip_hf"), pretrained=True)
    return build_model([clip, get_preset("tiny-convnext")], "channel_concat", {}, "mlp2x_gelu",
                       llm_spec=LLMSpec(source=str(work / "llm")), tokenizer=tok, seed=3, dtype=dtype, engine=engine)


def partition_problems(model, engine, reference) -> list[str]:
    """What is wrong with a partitioned build: parameters not partitioned or whole, gathered values."""
    params = dict(model.named_parameters())
    problems = [f"{n}: not partitioned" for n, p in params.items() if not hasattr(p, "ds_id")]
    problems += [f"{n}: whole on this rank" for n, p in params.items() if hasattr(p, "ds_id") and p.numel() > 0]
    want = dict(reference.named_parameters())
    with engine.gathered(model):
        for n, p in model.named_parameters():
            if not torch.equal(p.detach().cpu(), want[n].detach().cpu()):
                problems.append(f"{n}: gathered weights differ from the whole build")
    return problems


def _batch(model, rank: int, device) -> dict:
    from trainers.data.collate import make_collate
    from trainers.training.loader import to_device

    ids = model.tokenizer(TEXTS[rank % 3] + " " + TEXTS[3 + rank % 3], add_special_tokens=False)["input_ids"]
    flat = torch.tensor([model.image_token_id, *ids])
    item = {"input_ids": flat, "labels": flat.clone(), "has_image": True,
            "image": torch.full((3, 32, 32), 90 + rank, dtype=torch.uint8)}
    batch = make_collate(model.tokenizer.pad_token_id, model.image_token_id, model.num_image_tokens)([item])
    return to_device({k: v for k, v in batch.items() if torch.is_tensor(v)}, device)


def _evaluate(model, work: Path, tag: str, env, bf16: bool) -> dict:
    from trainers.eval import evaluate
    from trainers.spec import parse_trial_spec

    spec = parse_trial_spec({
        "experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
        "data": {"synthetic": {"seed": 1, "image_size": 32, "n_eval": 5}},
        "eval": {"benchmarks": BENCHES, "batch_size": 2, "max_new_tokens": 4, "bootstrap": {"resamples": 0}},
        "cache_dir": str(work / "cache")})
    model.eval()
    with torch.no_grad(), torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = float(model(**_batch(model, env.rank, env.device)).loss)
        res = evaluate(model, model.tokenizer, spec, work / tag, rank=env.rank, world_size=env.world_size, final=False)
    preds = {b: (work / tag / "predictions" / f"{b}.jsonl").read_text() for b in BENCHES} if env.is_main else {}
    return {"loss": loss, "scores": res["scores"], "preds": preds}


def _no_gathering(*args, **kwargs):
    raise AssertionError("evaluation gathered parameters in place")


def check(work: Path) -> dict:
    import deepspeed

    import experts
    from trainers.training import distributed as D
    from trainers.training.loop import StageJob
    from trainers.training.engines import make_engine
    from trainers.training.metrics import MetricsWriter
    from trainers.modeling.eagle import EagleModel
    from trainers.spec import StageSpec
    from trainers.stages.recipes import freeze_for_stage, param_groups

    env = D.init_distributed()
    bf16 = env.device.type == "cuda"
    dtype = torch.bfloat16 if bf16 else torch.float32
    if env.is_main:
        write_sources(work)
    D.barrier()
    reference = fresh_model(work, f"ref{env.rank}", dtype)
    if env.is_main:
        reference.save_pretrained(work / "saved")
    D.barrier()
    engine = make_engine("deepspeed_zero3", env, MetricsWriter(work / "m.jsonl", env.rank), seed=0,
                         checkpoint_every=10, bf16=bf16)
    with engine.build_context():
        loaded = EagleModel.from_pretrained(work / "saved", dtype=dtype)
    problems = [f"loaded {p}" for p in partition_problems(loaded, engine, reference)]
    cached = engine.partition(experts.load_expert(work / "saved" / "experts" / "1", dtype=dtype))
    problems += [f"cached {p}" for p in partition_problems(cached, engine, reference.mixture.experts[1])]
    del loaded, cached
    model = fresh_model(work, f"z3_{env.rank}", dtype, engine)
    problems += [f"fresh {p}" for p in partition_problems(model, engine, reference)]
    hp = StageSpec(global_batch_size=2 * env.world_size, micro_batch_size=2)
    freeze_for_stage(model, "align_projector", None)  # the recipe needs no spec for this stage
    engine.setup(StageJob("align_projector", "align_projector", model, param_groups(model, hp), [], None, hp), 1, 10)
    live = engine.last_module
    if env.world_size > 1 and not live.partitioned_across_ranks():
        problems.append("the engine's model does not report partitions across ranks (no lockstep)")
    real_gather, deepspeed.zero.GatheredParameters = deepspeed.zero.GatheredParameters, _no_gathering
    try:
        got = _evaluate(live, work, "zero3", env, bf16)
    finally:
        deepspeed.zero.GatheredParameters = real_gather
    want = _evaluate(reference.to(env.device), work, "whole", env, bf16)
    if abs(got["loss"] - want["loss"]) > 1e-3 * max(1.0, abs(want["loss"])):
        problems.append(f"rank {env.rank}: loss on the partitions {got['loss']:.5f} != whole {want['loss']:.5f}")
    if got["scores"] != want["scores"] or got["preds"] != want["preds"]:
        problems.append(f"rank {env.rank}: predictions on the partitions differ from the whole model's")
    problems = [p for part in (D.gather_objects(problems) or [problems]) for p in part]
    engine.release()
    doc = {"ok": not problems, "problems": problems[:10], "world_size": env.world_size,
           "device": env.device.type, "precision": "bf16" if bf16 else "fp32", "loss": got["loss"], "scores": got["scores"]}
    D.shutdown()
    return doc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: torchrun --nproc-per-node N -m benchmarks.zero3_check WORKDIR\n")
        return 2
    work = Path(argv[0])
    work.mkdir(parents=True, exist_ok=True)
    doc = check(work)
    import os

    if os.environ.get("RANK", "0") == "0":
        sys.stdout.write(json.dumps({"benchmark": "zero3_check", **doc}) + "\n")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
