"""A trial on several nodes: each SLURM task of a step (`srun`, or a SLURM backend job) is one node
of the trial, a torchrun of `--nproc` ranks; node rank, node count and the rendezvous come from
SLURM's variables. Node 0 hosts the rendezvous (torchrun's static one) and prepares the trial
directory; the other nodes wait for it, then start their ranks."""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

PORT_BASE, PORT_SPAN = 20000, 20000  # a job's port: concurrent jobs on one master node differ
_PLAIN = re.compile(r"^[^\[\],]+")


@dataclasses.dataclass(frozen=True)
class Nodes:
    count: int
    rank: int
    master_addr: str
    master_port: int
    run_id: str  # the same on every node of one launch (SLURM's job and step)

    def torchrun_args(self) -> list[str]:
        return ["--nnodes", str(self.count), "--node-rank", str(self.rank),
                "--master-addr", self.master_addr, "--master-port", str(self.master_port)]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[03-05,09],cpu1" -> "gpu03"."""
    head = _PLAIN.match(nodelist.strip())
    if head is None:
        raise ValueError(f"SLURM node list {nodelist!r}: no host name")
    rest = nodelist.strip()[head.end():]
    if not rest.startswith("["):
        return head.group(0)
    first = re.match(r"\[(\d+)", rest)
    if first is None:
        raise ValueError(f"SLURM node list {nodelist!r}: cannot read its first host")
    return head.group(0) + first.group(1)


def from_slurm(env: Mapping[str, str] | None = None) -> Nodes | None:
    """The nodes of this SLURM step, or None outside a step of several tasks (a batch script, one
    task, no SLURM). MASTER_ADDR / MASTER_PORT, where set, win over the derived ones."""
    env = os.environ if env is None else env
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or 1)
    if tasks < 2:
        return None
    job, step = env.get("SLURM_JOB_ID", "0"), env.get("SLURM_STEP_ID", "0")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    port = int(env.get("MASTER_PORT") or PORT_BASE + (int(job) * 7 + int(step or 0)) % PORT_SPAN)
    return Nodes(count=tasks, rank=int(env["SLURM_PROCID"]), master_addr=env.get("MASTER_ADDR") or first_host(nodelist),
                 master_port=port, run_id=f"slurm-{job}.{step}")


def names_nodes(torchrun_args: Sequence[str]) -> bool:
    """Whether torchrun arguments already say how the nodes meet (then SLURM's are not read)."""
    return any(a.startswith(("--nnodes", "--rdzv", "--master", "--node")) for a in torchrun_args)
