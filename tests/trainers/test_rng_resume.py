"""Per-rank dropout streams, saved and restored per rank: on 2 gloo processes a run killed after a
checkpoint and resumed ends with exactly the weights of an uninterrupted run, dropout on, under
DDP and DeepSpeed ZeRO-2; the two ranks draw different dropout masks."""
from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.slow
STEPS, CKPT_EVERY, CRASH_AT = 6, 2, 3


class DropoutNet(nn.Module):
    """Enough of EagleModel's surface for the engine: image-token fields and a loss."""

    num_image_tokens, image_token_id = 1, -1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 1))
        self.masks: list[float] = []

    def forward(self, input_ids, attention_mask, target, **_):
        h = self.body[1](self.body[0](input_ids.float()))
        d = self.body[2](h)
        self.masks.append(float((d == 0).float().sum()))
        return SimpleNamespace(loss=(self.body[3](d).squeeze(-1) - target).pow(2).mean())


def _data(n=32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    return [{"x": x[i], "y": x[i].sum()} for i in range(n)]


def _collate(items):
    x = torch.stack([i["x"] for i in items])
    return {"input_ids": x, "attention_mask": torch.ones_like(x, dtype=torch.long),
            "target": torch.stack([i["y"] for i in items]), "num_tokens": x.numel()}  # host count, as the collate gives


def _run(strategy, rank, ckpt, metrics, stop_after=None):
    from trainers.training.distributed import DistEnv
    from trainers.training.loop import ParamGroup, StageJob
    from trainers.training.engines import make_engine
    from trainers.training.metrics import MetricsWriter
    from trainers.spec import StageSpec

    model = DropoutNet()
    hp = StageSpec(lr=1e-2, global_batch_size=8, micro_batch_size=2, max_steps=STEPS, warmup_ratio=0.0)
    engine = make_engine(strategy, DistEnv(rank, int(os.environ["WORLD_SIZE"]), rank), MetricsWriter(metrics, rank), seed=0,
                         checkpoint_every=CKPT_EVERY, bf16=False)
    engine.stop_after = stop_after
    job = StageJob("sft", "sft", model, [ParamGroup("projector", list(model.parameters()), 1e-2)], _data(),
                   _collate, hp)
    try:
        engine.run(job, ckpt)
    except SystemExit:
        pass
    with engine.gathered(model):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    engine.release()
    return weights, model.masks


def _worker(rank, port, strategy, tmp):
    from trainers.training import distributed as D
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    D.init_distributed()
    whole, masks = _run(strategy, rank, f"{tmp}/whole", f"{tmp}/m_whole.jsonl")
    _run(strategy, rank, f"{tmp}/cut", f"{tmp}/m_cut.jsonl", stop_after=CRASH_AT)  # "killed" after step 3
    resumed, _ = _run(strategy, rank, f"{tmp}/cut", f"{tmp}/m_cut.jsonl")  # resumes from step 2
    torch.save({"whole": whole, "resumed": resumed, "first_mask": masks[0]}, f"{tmp}/rank{rank}.pt")
    D.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_zero2"])
def test_resumed_run_equals_an_uninterrupted_one_with_dropout(tmp_path, strategy):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(_free_port(), strategy, str(tmp_path)), nprocs=2)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for r in out:
        for k in r["whole"]:
            torch.testing.assert_close(r["resumed"][k], r["whole"][k], rtol=0, atol=0)
    assert out[0]["first_mask"] != out[1]["first_mask"]  # each rank its own dropout stream
    torch.testing.assert_close(out[0]["whole"], out[1]["whole"])  # DDP/ZeRO keep replicas equal
    for k, v in out[0]["whole"].items():  # and training moved the weights
        assert not torch.equal(v, DropoutNet().state_dict()[k]), k
