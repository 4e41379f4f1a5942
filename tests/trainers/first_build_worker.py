"""Run by test_first_build.py under torchrun (2 gloo ranks, ZeRO-3): a fresh model (random-init
experts, a fusion with weights, a preset LLM) built through Engine.first_build; each rank reports
which parts it built itself and rank 0 compares the gathered weights with a plain build."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import experts
from helpers_eagle import tiny_tokenizer, write_rank_reports
from trainers.modeling import first_build as FB
from trainers.modeling.saving import whole_state
from trainers.spec import LLMSpec
from trainers.stages.recipes import build_model
from trainers.training import distributed as D
from trainers.training.engines import make_engine

ARGS = (["tiny-clip", "tiny-convnext"], "deformable", {}, "mlp2x_gelu")


def counting(module, name: str, calls: list[str]):
    real = getattr(module, name)

    def wrapper(*a, **k):
        calls.append(name)
        return real(*a, **k)

    setattr(module, name, wrapper)


def main(work: Path, result: Path) -> None:
    env = D.init_distributed()
    engine = make_engine("deepspeed_zero3", env, None, seed=0, checkpoint_every=10**6, bf16=False)
    tok = tiny_tokenizer(work / f"tok{env.rank}")
    calls: list[str] = []
    counting(experts, "build_expert", calls)
    counting(FB, "build_llm", calls)
    cfgs = [experts.get_preset(e) for e in ARGS[0]]
    model = build_model(cfgs, *ARGS[1:], llm_spec=LLMSpec(preset="tiny-llama"), tokenizer=tok, seed=5,
                        engine=engine, scratch=work / "first_build")
    partitioned = all(hasattr(p, "ds_id") for p in model.parameters())
    built = sorted(calls)
    state = whole_state(model, is_main=env.is_main)
    doc = {"rank": env.rank, "built": built, "partitioned": partitioned}
    if env.is_main:
        plain = build_model(cfgs, *ARGS[1:], llm_spec=LLMSpec(preset="tiny-llama"), tokenizer=tok, seed=5)
        want = plain.state_dict()
        doc["same_keys"] = sorted(state) == sorted(want)
        doc["differ"] = [k for k in want if k in state and not torch.equal(state[k], want[k])]
        doc["scratch_left"] = (work / "first_build").exists()
    write_rank_reports(doc, result)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
