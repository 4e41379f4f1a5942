"""Scripted runners for the Ray tests (no tests here). They run inside Ray actors, so they live
in an importable module and keep their state in files, never in memory."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from test_study_fixtures import paper_runner


class SpanRunner:
    """The paper's objective; writes its start/end times and pid. In round 1 a trial waits (up to
    `gate_s`) until two round-1 trials have started, so that two at once is observable whatever the
    actor start-up time; it never waits for a third."""

    def __init__(self, gate_s: float = 60.0, pause: float = 0.5) -> None:
        self.gate_s, self.pause = gate_s, pause

    def __call__(self, job) -> dict[str, Any]:
        t0 = time.time()
        if job.user_attrs["round"] == 1:
            gate = Path(job.trial_dir).parent / "_gate"
            gate.mkdir(exist_ok=True)
            (gate / str(job.number)).write_text(str(t0))
            while len(list(gate.iterdir())) < 2 and time.time() - t0 < self.gate_s:
                time.sleep(0.05)
            time.sleep(self.pause)
        result = paper_runner(job)
        Path(job.trial_dir, "span.json").write_text(json.dumps([t0, time.time(), os.getpid()]))
        return result


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


class FlakyRunner:
    """`raises`: expert sets whose trial always raises; `dies_once`: expert sets whose trial process
    exits hard on its first run (a dead worker), marked in `marks` so the rerun succeeds."""

    def __init__(self, marks: str, raises: tuple[str, ...] = (), dies_once: tuple[str, ...] = ()) -> None:
        self.marks, self.raises, self.dies_once = marks, raises, dies_once

    def __call__(self, job) -> dict[str, Any]:
        experts = job.user_attrs["experts"]
        if experts in self.raises:
            raise ValueError(f"scripted failure for {experts}")
        if experts in self.dies_once:
            mark = Path(self.marks, f"{experts}.died")
            if not mark.exists():
                mark.parent.mkdir(parents=True, exist_ok=True)
                mark.write_text(str(os.getpid()))
                os._exit(3)  # the process dies without a word: only Ray's FailureConfig can help
        return paper_runner(job)


def drive(workdir: str, address: str, seconds: float, hold_from: int) -> None:
    """A driver process for the kill test: the paper's greedy study on the given Ray cluster; the
    first trial to start after hold_from completions runs for a minute (Ray ends it with the driver)."""
    import explorer.backends.ray_tune  # noqa: F401
    from explorer.controller import run_study
    from explorer.study.storage import default_storage_url
    from explorer.study.load import parse_study
    from test_study_fixtures import HOLD_MARK, Hold, SleepyRunner, study_data

    data = study_data("killed", {"type": "greedy", "base": ["A", "B"]}, backend="ray", ray_address=address,
                      resources={"max_concurrent_trials": 2})
    spec = parse_study(data, "killed.yaml", Path(workdir))
    url = default_storage_url(workdir)
    runner = SleepyRunner(seconds, Hold(url, "killed", hold_from, str(Path(workdir) / HOLD_MARK)), hold_s=60.0)
    run_study(spec, url, workdir, runner=runner, backend="ray")


def ddp_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker doing real DDP training of a tiny regression over gloo. On the first
    attempt rank 1 dies after one step (a lost worker) unless the mark file exists; on every attempt
    if an `always_die` file exists (a deterministic failure)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(config["out"])
    mark = out / "rank1.died"
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    losses = []
    for step in range(30):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if step == 0 and rank == 1 and ((out / "always_die").exists() or not mark.exists()):
            mark.write_text(str(os.getpid()))
            os._exit(5)
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    if rank == 0:
        result = {"objective": -losses[-1], "first_loss": losses[0], "world_size": world,
                  "rank_sum": float(total), "attempts": 1 + mark.exists()}
        (out / "result.json").write_text(json.dumps(result))


class ReportingRunner:
    """Reports the paper's Avg as an intermediate value at steps 0..4 (`pause` s apart), like eval
    lines in metrics.jsonl; writes the last step it reached."""

    def __init__(self, pause: float = 0.5) -> None:
        self.pause = pause

    def __call__(self, job) -> dict[str, Any]:
        result = paper_runner(job)
        for step in range(5):
            Path(job.trial_dir, "last_step").write_text(str(step))
            job.report(step, result["objective"])
            time.sleep(self.pause)
        return result
