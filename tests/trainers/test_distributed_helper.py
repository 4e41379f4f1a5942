"""trainers/training/distributed.py is the only caller of torch.distributed; its collectives work on gloo and
keep CPU tensors off an NCCL-only group's path; the timeout is read and checked."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from trainers.training import distributed as D
ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "trainers" / "training" / "distributed.py"
PACKAGES = ("trainers", "explorer", "experts", "benchmarks", "search_spaces", "studies")
CALL = re.compile(r"(\bdist|torch\.distributed|distributed_c10d)\s*\.\s*(all_reduce|all_gather\w*|broadcast\w*|barrier|"
                  r"gather\w*|reduce\w*|scatter\w*|send|recv|isend|irecv|init_process_group|destroy_process_group|"
                  r"new_group|monitored_barrier)\b")
IMPORT = re.compile(r"^\s*(import torch\.distributed|from torch\.distributed(\.distributed_c10d)? import|"
                    r"from torch import distributed)", re.M)


def _sources():
    for pkg in PACKAGES:
        yield from (p for p in (ROOT / pkg).rglob("*.py") if p != HELPER)


def test_no_collective_outside_the_helper():
    offenders = []
    for path in _sources():
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in CALL.finditer(text)]
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in IMPORT.finditer(text)]
    assert offenders == [], "torch.distributed used outside trainers/training/distributed.py:\n" + "\n".join(offenders)


def test_the_guard_sees_a_collective(tmp_path):
    """The patterns catch the forms a call site takes (so the test above can fail)."""
    for line in ("dist.all_reduce(t)", "torch.distributed.barrier()", "dist.broadcast_object_list(b, src=0)",
                 "dist . gather_object(x, p)"):
        assert CALL.search(line), line
    assert IMPORT.search("import torch.distributed as dist")


def test_single_process_collectives_are_identities():
    t = torch.tensor([1.0, 2.0])
    assert D.all_reduce(t) is t and D.all_reduce_values([3.0]) == [3.0]
    assert D.broadcast_object({"a": 1}) == {"a": 1} and D.gather_objects(5) == [5]
    D.barrier()  # no group: nothing to wait for


def test_gpu_group_has_a_cpu_backend():
    assert D.backend_for(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
    assert D.backend_for(torch.device("cpu")) == "gloo"


def test_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.timeout() == timedelta(minutes=D.DEFAULT_TIMEOUT_MIN)
    monkeypatch.setenv(D.TIMEOUT_ENV, "2.5")
    assert D.timeout() == timedelta(minutes=2.5)
    for bad in ("soon", "0"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=D.TIMEOUT_ENV):
            D.timeout()


def _worker(rank: int, init: str, out: str) -> None:
    D.init_group(torch.device("cpu"), init_method=f"file://{init}", rank=rank, world_size=2)
    total = D.all_reduce(torch.tensor([float(rank + 1)], dtype=torch.float64))
    peak = D.all_reduce(torch.tensor([10.0 * (rank + 1)]), op="max")
    got = D.broadcast_object({"from": rank})
    parts = D.gather_objects(rank * 7)
    if rank == 0:
        torch.save({"sum": total.item(), "max": peak.item(), "b": got, "parts": parts}, out)
    D.shutdown()


@pytest.mark.slow
def test_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path / "out.pt")), nprocs=2)
    res = torch.load(tmp_path / "out.pt", weights_only=False)
    assert res == {"sum": 3.0, "max": 20.0, "b": {"from": 0}, "parts": [0, 7]}
