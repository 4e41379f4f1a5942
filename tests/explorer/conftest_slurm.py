"""A real one-node SLURM cluster on localhost for the SLURM backend tests (import the fixture):
munge, slurmctld and slurmd from Debian's slurm-wlm, a minimal slurm.conf (proctrack/linuxproc,
no cgroups). Skips, with the reason, only where SLURM is not installed or does not start."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONF = """ClusterName=eagle
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ReturnToService=2
MpiDefault=none
KillWait=30
NodeName={host} CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _idle(env: dict[str, str]) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Yields the SLURM_CONF path of a running one-node cluster (and sets it in os.environ)."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not found; .ci/run installs slurm-wlm)")
    pytest.importorskip("submitit")
    d = tmp_path_factory.mktemp("slurm")
    (d / "state").mkdir()
    (d / "spool").mkdir()
    mem = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = d / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname(), d=d, cpus=os.cpu_count(), mem=mem))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "munge:munge", "/run/munge"], capture_output=True)
        subprocess.run(["munged", "--force"], env=env, capture_output=True)
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon], env=env, capture_output=True)
    deadline = time.time() + 60
    while time.time() < deadline and not _idle(env):
        time.sleep(0.5)
    if not _idle(env):
        log = (d / "slurmctld.log").read_text(errors="replace")[-500:] if (d / "slurmctld.log").exists() else ""
        pytest.skip(f"SLURM did not start on localhost: {log.strip().splitlines()[-1:] or 'no log'}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    os.environ["SLURM_CONF"] = str(conf)
    # jobs unpickle the scripted runners by module name: the repo and this folder must be importable
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(HERE), saved["PYTHONPATH"]) if p)
    yield conf
    for pid_file in ("slurmd.pid", "slurmctld.pid"):
        try:
            os.kill(int((d / pid_file).read_text()), 15)
        except (OSError, ValueError):
            pass
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
