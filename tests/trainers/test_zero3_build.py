"""ZeRO-3 builds a stage's model partitioned: on 2 gloo processes, EagleModel.from_pretrained inside
the DeepSpeed engine's build context leaves every parameter (LLM, experts, fusion, projector) as a
partition on each rank, none whole, and the gathered weights are the saved ones."""
from __future__ import annotations

import os
import socket

import pytest
import torch

from tests.trainers.helpers_eagle import tiny_model

pytestmark = pytest.mark.slow


def _worker(rank: int, port: int, saved: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from trainers import distributed as D
    from trainers.engine import make_engine
    from trainers.metrics import MetricsWriter
    from trainers.model import EagleModel

    env = D.init_distributed()
    engine = make_engine("deepspeed_zero3", env, MetricsWriter(f"{out}.m", rank), 0, 10, bf16=False)
    with engine.build_context():
        model = EagleModel.from_pretrained(saved)
    params = dict(model.named_parameters())
    whole_here = sorted(n for n, p in params.items() if p.numel() > 0)
    local = sum(p.ds_tensor.numel() for p in params.values())
    total = sum(p.ds_numel for p in params.values())
    with engine.gathered(model):
        gathered = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.save({"whole_here": whole_here, "local": local, "total": total, "gathered": gathered,
                "partitioned": all(hasattr(p, "ds_id") for p in params.values())}, f"{out}{rank}.pt")
    D.shutdown()


def test_from_pretrained_under_zero3_is_partitioned_at_construction(tmp_path):
    import torch.multiprocessing as mp

    model = tiny_model(tmp_path)
    model.save_pretrained(tmp_path / "saved")
    reference = {n: p.detach() for n, p in model.named_parameters()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path / "saved"), str(tmp_path / "r")), nprocs=2)
    n_params = sum(p.numel() for p in reference.values())
    for rank in range(2):
        got = torch.load(tmp_path / f"r{rank}.pt", weights_only=False)
        assert got["partitioned"] and got["whole_here"] == []  # no parameter is whole on any rank
        assert got["total"] == n_params and got["local"] <= n_params // 2 + 2 * len(reference)
        assert got["gathered"].keys() == reference.keys()
        for n, v in reference.items():
            torch.testing.assert_close(got["gathered"][n], v, rtol=0, atol=0, msg=n)
