"""ZeRO-3 builds every stage's model partitioned, on 2 gloo processes:
- a stage loaded from disk (EagleModel.from_pretrained inside the engine's build context);
- a fresh model (stages 1, 2 and the baseline: stages.build_model with the engine) whose expert is
  read pretrained from a transformers directory and whose LLM is read from its source: each part is
  partitioned as soon as it is built, and the gathered weights equal a 1-process build's exactly
  (pretrained weights, random inits and all);
- a stage-2 expert read from the stage-1 cache and partitioned before the next is read.
No parameter is whole on any rank."""
from __future__ import annotations

import os
import socket

import pytest
import torch

from tests.trainers.helpers_eagle import TEXTS, tiny_model

pytestmark = pytest.mark.slow


def _fresh(tmp: str, rank: int, engine=None):
    from experts import get_preset
    from trainers.data.tokenizer import build_word_tokenizer
    from trainers.spec import LLMSpec
    from trainers.stages import build_model

    tok = build_word_tokenizer(TEXTS, f"{tmp}/tok{rank}")
    clip = get_preset("tiny-clip").with_overrides(source=f"{tmp}/clip_hf", pretrained=True)
    return build_model([clip, get_preset("tiny-convnext")], "channel_concat", {}, "mlp2x_gelu",
                       LLMSpec(source=f"{tmp}/llm"), tok, seed=3, engine=engine)


def _summary(model, engine) -> dict:
    params = dict(model.named_parameters())
    with engine.gathered(model):
        gathered = {n: p.detach().clone() for n, p in model.named_parameters()}
    return {"whole_here": sorted(n for n, p in params.items() if p.numel() > 0),
            "local": sum(p.ds_tensor.numel() for p in params.values()),
            "total": sum(p.ds_numel for p in params.values()), "gathered": gathered,
            "partitioned": all(hasattr(p, "ds_id") for p in params.values())}


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import experts
    from trainers import distributed as D
    from trainers.engine import make_engine
    from trainers.metrics import MetricsWriter
    from trainers.model import EagleModel

    env = D.init_distributed()
    engine = make_engine("deepspeed_zero3", env, MetricsWriter(f"{tmp}/m.jsonl", rank), 0, 10, bf16=False)
    with engine.build_context():
        loaded = EagleModel.from_pretrained(f"{tmp}/saved")
    cached = engine.partition(experts.load_expert(f"{tmp}/saved/experts/1"))
    out = {"loaded": _summary(loaded, engine), "fresh": _summary(_fresh(tmp, rank, engine), engine),
           "cached": _summary(cached, engine)}
    torch.save(out, f"{tmp}/r{rank}.pt")
    D.shutdown()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import torch.multiprocessing as mp

    from trainers.llm import build_llm
    from trainers.spec import LLMSpec

    tmp = tmp_path_factory.mktemp("zero3")
    model = tiny_model(tmp)
    model.save_pretrained(tmp / "saved")
    model.mixture.experts[0].backbone.save_pretrained(tmp / "clip_hf")  # a transformers checkpoint
    build_llm(LLMSpec(preset="tiny-llama"), model.tokenizer, seed=7).save_pretrained(tmp / "llm")
    refs = {"loaded": {n: p.detach() for n, p in model.named_parameters()},
            "fresh": {n: p.detach() for n, p in _fresh(str(tmp), 9).named_parameters()},
            "cached": {n: p.detach() for n, p in model.mixture.experts[1].named_parameters()}}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp)), nprocs=2)
    return refs, [torch.load(tmp / f"r{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("kind", ["loaded", "fresh", "cached"])
def test_zero3_models_are_partitioned_at_construction_and_exact(built, kind):
    refs, ranks = built
    reference = refs[kind]
    n_params = sum(p.numel() for p in reference.values())
    for got in ranks:
        got = got[kind]
        assert got["partitioned"] and got["whole_here"] == []  # no parameter is whole on any rank
        assert got["total"] == n_params and got["local"] <= n_params // 2 + 2 * len(reference)
        assert got["gathered"].keys() == reference.keys()
        for n, v in reference.items():
            torch.testing.assert_close(got["gathered"][n], v, rtol=0, atol=0, msg=n)
