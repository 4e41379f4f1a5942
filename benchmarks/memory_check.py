"""The peak-memory estimate (trainers.estimate.cost) against the measured peak of real steps of the tiny
trial (studies/trials/tiny.yaml, micro batch 8), per stage: on CPU the profiler's allocations
(fp32), on a GPU torch.cuda.max_memory_allocated (bf16 autocast, as DDP trains).
Prints ONE JSON line. `python -m benchmarks.memory_check [--micro-batch 8]`."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "studies" / "trials" / "tiny.yaml"


def tiny_setup(work: Path, micro_batch: int = 8):
    """(spec, data, tokenizer) of the tiny trial with one micro batch per step."""
    from trainers.stages import recipes as S
    from trainers.spec import parse_trial_spec

    d = yaml.safe_load(TINY.read_text())
    d["data"]["synthetic"].update(n_pretrain=2 * micro_batch, n_sft=2 * micro_batch, n_heldout=8)
    for st in d["train"]["stages"].values():
        st.update(micro_batch_size=micro_batch, global_batch_size=micro_batch)
    spec = parse_trial_spec(d)
    data = S.resolve_data(spec, work / "cache")
    return spec, data, S.build_trial_tokenizer(spec.llm, data, work / "tok")


def measure_stage(spec, data, tok, *, stage: str, expert_index: int | None = None,
                  device: str = "cpu") -> tuple[int, int]:
    """(peak bytes of a steady-state step -- the second, AdamW states existing --, text tokens)."""
    from trainers.stages import recipes as S
    from trainers.estimate.memory import measure_step_peak

    cfgs = S.resolve_experts(spec)
    if expert_index is not None:  # stage 1 trains each expert alone
        cfgs = [cfgs[expert_index].with_overrides(freeze=False)]
    model = S.build_model(cfgs, "channel_concat", {}, spec.projector.type, llm_spec=spec.llm, tokenizer=tok, seed=spec.seed)
    S.freeze_for_stage(model, stage, spec)
    model.to(device).train()
    opt = torch.optim.AdamW([p for g in S.param_groups(model, spec.train.stages[stage]) for p in g.params])
    caption = stage != "sft"
    from trainers.data.verify import write_checks
    from trainers.training.loader import to_device

    path = data.pretrain if caption else data.sft
    with tempfile.TemporaryDirectory() as tmp:  # the launcher's image checks, for this one dataset
        checks = write_checks([path], data.image_folder, Path(tmp), Path(tmp), "error")
    ds = S.make_dataset(path, data, tok, S.PRETRAIN_TEMPLATE if caption else spec.llm.template,
                        max_length=spec.llm.max_length, spec=spec, checks=checks)
    n = spec.train.stages[stage].micro_batch_size
    batch = to_device(S.make_collate(model, stage, spec)([ds[i] for i in range(n)]), device)
    on_gpu = device != "cpu"

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=on_gpu):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    text = int(batch["attention_mask"].shape[1]) - model.num_image_tokens  # the collate expanded the image
    if not on_gpu:
        return measure_step_peak(step, model, opt), text
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(), text


def compare(work: Path, micro_batch: int = 8, device: str = "cpu") -> dict:
    from trainers.estimate.cost import Assumptions, TrialEstimator
    from trainers.estimate.memory import GiB

    spec, data, tok = tiny_setup(work, micro_batch)
    out = {}
    for stage in ("align_expert", "align_projector", "sft"):
        if stage == "align_expert":
            measured, text = max(measure_stage(spec, data, tok, stage=stage, expert_index=i, device=device) for i in range(len(spec.experts)))
        else:
            measured, text = measure_stage(spec, data, tok, stage=stage, expert_index=None, device=device)
        a = Assumptions(device="gpu" if device != "cpu" else "cpu", caption_tokens=text, sft_tokens=text)
        est = TrialEstimator(a).trial(spec, len(tok))[stage].peak_memory_gb * GiB
        out[stage] = {"measured_mib": round(measured / 2**20, 2), "estimated_mib": round(est / 2**20, 2),
                      "error": round(est / measured - 1, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--micro-batch", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        stages = compare(Path(tmp), args.micro_batch, device)
    name = torch.cuda.get_device_name(0) if device != "cpu" else "cpu"
    sys.stdout.write(json.dumps({"benchmark": "memory_check", "device": name, "micro_batch": args.micro_batch,
                                 "stages": stages}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
