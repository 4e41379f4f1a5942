"""Run by test_partitions.py under torchrun (2 gloo ranks): a saved LLM read into ZeRO-3 partitions,
each rank's range checked against the file, then the gathered model's logits against a plain load."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from experts.loading import SafetensorsState
from helpers_eagle import write_rank_reports
from trainers.modeling.llm import import_llm_class
from trainers.modeling.partitions import is_partitioned, load_state, read_llm
from trainers.spec import LLMSpec
from trainers.training import distributed as D
from trainers.training.engines import make_engine


def main(src: Path, result: Path) -> None:
    env = D.init_distributed()
    engine = make_engine("deepspeed_zero3", env, None, seed=0, checkpoint_every=10**6, bf16=False)
    import_llm_class(LLMSpec(source=str(src)))  # before zero.Init (trainers/modeling/llm.py says why)
    with engine.build_context():
        llm = read_llm(src, dtype=torch.float32, attn_implementation="eager")
        head = torch.nn.Linear(16, 24)  # a part filled by load_state
    state = SafetensorsState(src)
    own = {}
    for name, p in llm.named_parameters():
        key = name if name in state else "model.embed_tokens.weight"  # a tied head
        size = p.ds_tensor.ds_numel
        start, end = size * env.rank, min(size * (env.rank + 1), p.ds_numel)
        own[name] = is_partitioned(p) and torch.equal(p.ds_tensor[:max(end - start, 0)],
                                                      state[key].reshape(-1)[start:end])
    torch.manual_seed(1)
    want = {"weight": torch.randn(24, 16), "bias": torch.randn(24)}
    load_state(head, want)
    ids = torch.tensor([[3, 9, 4, 7, 1]])
    with torch.no_grad(), engine.gathered(llm):  # no engine hooks here: gather for the forward
        logits = llm(input_ids=ids).logits
    with torch.no_grad():
        with engine.gathered(head):
            head_ok = torch.equal(head.weight, want["weight"]) and torch.equal(head.bias, want["bias"])
    plain = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        same = torch.equal(logits, plain(input_ids=ids).logits)
    doc = {"rank": env.rank, "own_ranges": all(own.values()), "n": len(own), "head": head_ok, "logits": same,
           "tied": llm.lm_head.weight is llm.model.embed_tokens.weight}
    write_rank_reports(doc, result)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
