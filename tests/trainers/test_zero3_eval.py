"""ZeRO-3 evaluation runs on the live partitions: on 2 gloo processes the same saved weights, set up
in DeepSpeed ZeRO-3 and ZeRO-2 engines, give the same losses, predictions and scores; ZeRO-3 never
gathers in place (DeepSpeed's hooks fetch one module at a time) and leaves the partitions as they
were. The ranks hold different item counts (gqa: 5 items in batches of 2, so 2 batches on rank 0
and 1 on rank 1) and prompts of different lengths; lockstep generation finishes instead of hanging."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch

from tests.trainers.helpers_eagle import TEXTS, tiny_model

pytestmark = pytest.mark.slow
BENCHES = ["gqa", "pope"]


def _spec(tmp: str):
    from trainers.spec import parse_trial_spec

    return parse_trial_spec({
        "experts": [{"preset": "tiny-clip"}, {"preset": "tiny-convnext"}],
        "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
        "data": {"synthetic": {"seed": 1, "image_size": 32, "n_eval": 5}},
        "eval": {"benchmarks": BENCHES, "batch_size": 2, "max_new_tokens": 4, "bootstrap": {"resamples": 0}},
        "cache_dir": f"{tmp}/cache"})


def _batch(model, rank: int) -> dict:
    """A collated batch whose lengths differ per rank."""
    from trainers.data.collate import make_collate

    ids = model.tokenizer(TEXTS[rank] + " " + TEXTS[rank + 2], add_special_tokens=False)["input_ids"]
    flat = torch.tensor([model.image_token_id, *ids])
    item = {"input_ids": flat, "labels": flat.clone(), "has_image": True,
            "image": torch.full((3, 32, 32), 90 + rank, dtype=torch.uint8)}
    batch = make_collate(model.tokenizer.pad_token_id, model.image_token_id, model.num_image_tokens)([item])
    return {k: v for k, v in batch.items() if torch.is_tensor(v)}


def _no_gathering(*args, **kwargs):
    raise AssertionError("evaluation gathered parameters in place")


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from trainers import distributed as D
    from trainers.engine import StageJob, make_engine
    from trainers.eval import evaluate
    from trainers.metrics import MetricsWriter
    from trainers.model import EagleModel
    from trainers.spec import StageSpec
    from trainers.stages import freeze_for_stage, param_groups

    env = D.init_distributed()
    spec = _spec(tmp)
    hp = StageSpec(global_batch_size=4, micro_batch_size=2)
    out = {}
    for strategy in ("deepspeed_zero3", "deepspeed_zero2"):
        engine = make_engine(strategy, env, MetricsWriter(f"{tmp}/m.jsonl", rank), 0, 10, bf16=False)
        with engine.build_context():
            model = EagleModel.from_pretrained(f"{tmp}/saved")
        freeze_for_stage(model, "sft", spec)
        engine.setup(StageJob("sft", "sft", model, param_groups(model, hp), [], None, hp), 1, 10)
        live = engine.last_module
        def whole_now():  # partitioned parameters present in full (small ones DeepSpeed persists aside)
            return sorted(n for n, p in live.named_parameters()
                          if hasattr(p, "ds_id") and p.numel() > 0 and not getattr(p, "ds_persist", False))
        live.eval()
        import deepspeed

        real_gather = deepspeed.zero.GatheredParameters
        deepspeed.zero.GatheredParameters = _no_gathering  # evaluation must not gather the model whole
        with torch.no_grad():
            loss = float(live(**_batch(live, rank)).loss)
            res = evaluate(live, live.tokenizer, spec, Path(tmp) / strategy, rank, 2, final=False)
        deepspeed.zero.GatheredParameters = real_gather
        whole = whole_now()
        preds = {b: (Path(tmp) / strategy / "predictions" / f"{b}.jsonl").read_text() for b in BENCHES} \
            if rank == 0 else {}
        out[strategy] = {"loss": loss, "scores": res["scores"], "preds": preds, "whole_after": whole,
                         "lockstep": live.partitioned_across_ranks()}
        engine.release()
    Path(f"{tmp}/r{rank}.json").write_text(json.dumps(out))
    D.shutdown()


def test_zero3_eval_on_partitions_equals_zero2_and_does_not_hang(tmp_path):
    import torch.multiprocessing as mp

    tiny_model(tmp_path).save_pretrained(tmp_path / "saved")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 600
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # a rank waiting on a collective the other never enters
            for p in ctx.processes:
                p.kill()
            pytest.fail("ZeRO-3 evaluation hung (ranks ran different numbers of forwards)")
    ranks = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    for got in ranks:
        z3, z2 = got["deepspeed_zero3"], got["deepspeed_zero2"]
        assert z3["lockstep"] and not z2["lockstep"]
        assert z3["whole_after"] == []  # evaluation left every partition as it was
        assert z3["loss"] == pytest.approx(z2["loss"], rel=1e-6, abs=1e-6)
        assert z3["scores"] == z2["scores"] and set(BENCHES) <= set(z3["scores"])
    assert ranks[0]["deepspeed_zero3"]["loss"] != ranks[1]["deepspeed_zero3"]["loss"]  # the batches differed
    assert ranks[0]["deepspeed_zero3"]["preds"] == ranks[0]["deepspeed_zero2"]["preds"]
    assert len(ranks[0]["deepspeed_zero3"]["preds"]["gqa"].splitlines()) == 5  # 3 items on rank 0, 2 on rank 1
