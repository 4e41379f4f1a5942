"""Full-size throughput and MFU per stage on one GPU: the paper's best mixture A+B+F+E+C at its
resolutions (random init), a 7B-shaped Llama (Llama-2-7B / Vicuna-7B shape, random init; the
1.1B bench-llama when the estimate says 7B does not fit), 1024 visual tokens + LLaVA-length text
(64 caption tokens in pre-alignment, 512 in SFT). Each stage trains with its recipe's freezing,
AdamW, bf16 autocast; MFU = FLOPs of one real step (FlopCounterMode: experts forward when
frozen, forward + backward when trained, fusion, projector, the LLM with attention, its backward
input-only when frozen) / step time / the GPU's bf16 dense peak. `--tiny` runs the same loop with
the tiny presets (a CPU check). Prints ONE JSON line."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

MIXTURE = ("clip-l-448", "convnext-xxl-1024", "eva02-l-1024", "pix2struct-l-1024", "sam-l-1024")  # A+B+F+E+C
TINY_MIXTURE = ("tiny-clip", "tiny-convnext", "tiny-eva02", "tiny-pix2struct", "tiny-sam")
TEXT = {"align_expert": 64, "align_projector": 64, "sft": 512}
ALIGN_EXPERT = 1  # stage 1 is measured on one expert alone: ConvNeXt-XXL, the most expensive
MEMORY_FRACTION = 0.85  # of the GPU's memory the estimate may fill (allocator slack, CUDA context)


def bench_spec(llm_preset: str, micro: dict[str, int], tiny: bool = False) -> dict[str, Any]:
    """The benchmark as a trial spec (what `eagle-explore plan` would estimate)."""
    names = TINY_MIXTURE if tiny else MIXTURE
    return {"name": "full-size-throughput", "experts": [{"preset": n, "pretrained": False} for n in names],
            "llm": {"preset": llm_preset, "grad_checkpointing": True, "max_length": 2048},
            "data": {"synthetic": {"n_pretrain": 64, "n_sft": 64}},
            "train": {"strategy": "ddp", "precision": "bf16" if not tiny else "fp32",
                      "stages": {s: {"micro_batch_size": m, "global_batch_size": m} for s, m in micro.items()}}}


def choose(gpu_gb: float, tiny: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec, estimate per stage): the 7B shape with the largest micro batches (<= 8) the estimate
    fits in MEMORY_FRACTION of the GPU, else bench-llama."""
    from trainers.estimate.arch_profiles import default_cache_path
    from trainers.estimate.cost import Assumptions, TrialEstimator
    from trainers.spec import parse_trial_spec

    est = TrialEstimator(Assumptions(device="cpu" if tiny else "gpu", caption_tokens=64, sft_tokens=512),
                         default_cache_path())
    presets = ("tiny-llama",) if tiny else ("bench-7b", "bench-llama")
    for preset in presets:
        micro = {}
        for stage in TEXT:
            for m in (8, 4, 2, 1):
                spec = parse_trial_spec(bench_spec(preset, {**micro, stage: m}, tiny))
                s = est.trial(spec, vocab=32000 if not tiny else None)[stage]
                if s.peak_memory_gb <= MEMORY_FRACTION * gpu_gb or tiny:
                    micro[stage] = m
                    break
        if len(micro) == len(TEXT):
            spec = parse_trial_spec(bench_spec(preset, micro, tiny))
            rows = {k: v.as_dict() for k, v in est.trial(spec, vocab=32000 if not tiny else None).items()}
            alone = spec.model_copy(update={"experts": [spec.experts[ALIGN_EXPERT]]})  # what run_stage trains
            rows["align_expert"] = est.trial(alone, vocab=32000 if not tiny else None)["align_expert"].as_dict()
            est.save()
            return spec, rows
    raise RuntimeError(f"no benchmark configuration fits {gpu_gb:.0f} GB")


def _model(spec, stage: str, device: torch.device, tok, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    import experts
    from trainers.stages import recipes as S
    from trainers.modeling.llm import LLM_PRESETS, enable_checkpointing
    from trainers.modeling.eagle import EagleModel

    cfgs = S.resolve_experts(spec)
    if stage == "align_expert":  # stage 1 trains one expert alone
        cfgs = [cfgs[ALIGN_EXPERT].with_overrides(freeze=False)]
    with torch.device(device):
        mixture = experts.build_mixture(cfgs, "channel_concat")
        llm = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, pad_token_id=tok.pad_token_id,
                                           **LLM_PRESETS[spec.llm.preset]))
        enable_checkpointing(llm)
        model = EagleModel(mixture, "mlp2x_gelu", llm, tok)
    S.freeze_for_stage(model, stage, spec)
    return model.train()


def run_stage(spec, stage: str, device: torch.device, *, tok, steps: int, peak_tflops: float | None) -> dict[str, Any]:
    from trainers.estimate.flops import step_flops

    vocab = 32000 if device.type == "cuda" else len(tok) + 8
    model = _model(spec, stage, device, tok, vocab)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    micro, text = spec.train.stages[stage].micro_batch_size, TEXT[stage]
    gen = torch.Generator().manual_seed(0)
    n_img = model.num_image_tokens  # the collate's expansion: one slot per visual token
    ids = torch.randint(8, len(tok), (micro, n_img + text + 1), generator=gen)
    ids[:, :n_img] = model.image_token_id
    labels = ids.clone()
    labels[:, :n_img] = -100
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "images": torch.rand(micro, 3, 1024 if device.type == "cuda" else 128, 1024 if device.type == "cuda"
                                  else 128, generator=gen).to(device), "labels": labels.to(device)}
    bf16 = device.type == "cuda"
    flops = step_flops(model, batch, bf16=bf16)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    losses = [step()]  # warm-up (kernels, optimizer states)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses += [step() for _ in range(steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    tokens = micro * (text + model.num_image_tokens)
    out = {"micro_batch": micro, "tokens_per_sample": text + model.num_image_tokens,
           "flops_per_step": flops["total"], "flops_forward": flops["forward"], "step_s": round(dt, 4),
           "tokens_per_s_per_gpu": round(tokens / dt, 1), "samples_per_s_per_gpu": round(micro / dt, 2),
           "achieved_tflops": round(flops["total"] / dt / 1e12, 2), "loss_first": losses[0], "loss_last": losses[-1],
           "trainable_params": sum(p.numel() for p in params),
           "frozen_params": sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in params)}
    if peak_tflops:
        out["mfu"] = round(flops["total"] / dt / (peak_tflops * 1e12), 4)
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model, opt, params
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def benchmark(tiny: bool = False, steps: int = 5, peak_override: float | None = None) -> dict[str, Any]:
    from trainers.data.tokenizer import build_word_tokenizer
    from trainers.estimate.flops import peak_tflops

    on_gpu = torch.cuda.is_available() and not tiny
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    gpu_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 if on_gpu else 1.0
    peak = peak_tflops(name, peak_override) if on_gpu else peak_override
    spec, estimate = choose(gpu_gb, tiny=not on_gpu)
    with tempfile.TemporaryDirectory() as tmp:
        words = [f"w{i}" for i in range(600)]  # a vocabulary wide enough for random text
        tok = build_word_tokenizer([" ".join(words)], Path(tmp) / "tok")
        stages = {s: run_stage(spec, s, device, tok=tok, steps=steps, peak_tflops=peak) for s in TEXT}
    for s, row in stages.items():
        row["estimated_peak_memory_gb"] = round(estimate[s]["peak_memory_gb"], 2)
    return {"benchmark": "full_size_throughput", "device": name, "peak_tflops": peak,
            "mixture": "+".join(e.preset for e in spec.experts), "llm": spec.llm.preset,
            "align_expert_expert": spec.experts[ALIGN_EXPERT].preset, "stages": stages}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny presets on CPU (checks the loop, no MFU)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gpu-peak-tflops", type=float, default=None, help="bf16 dense peak for GPUs not listed")
    args = ap.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        sys.stderr.write("full_size_throughput: no CUDA device; use --tiny for the CPU check\n")
        return 2
    sys.stdout.write(json.dumps(benchmark(args.tiny, args.steps, args.gpu_peak_tflops)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
