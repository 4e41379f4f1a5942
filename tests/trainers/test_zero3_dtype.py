"""ZeRO-3 partitions hold the trial's precision on any CPU. DeepSpeed replaces an explicit
zero.Init dtype by bf16 where the accelerator reports no fp16 support (some CPUs do, some do not),
so the engine must take the precision from the config. The check runs in a fresh 1-rank gloo
process with fp16 support switched off, as on such a CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys, torch, torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from trainers.training.zero import ZeroEngine
get_accelerator().is_fp16_supported = lambda: False  # as on a CPU without fp16
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
out = {}
for bf16 in (False, True):
    engine = ZeroEngine(None, None, seed=0, checkpoint_every=1, bf16=bf16, strategy="deepspeed_zero3")
    dtype = torch.bfloat16 if bf16 else torch.float32  # a part is built in the trial's precision first
    built = engine.partition(torch.nn.Linear(8, 8, dtype=dtype))
    with engine.build_context():
        fresh = torch.nn.Linear(8, 8)
    out[str(bf16)] = [str(m.weight.ds_tensor.dtype) for m in (built, fresh)]
print(json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_zero3_partitions_keep_the_trial_precision_on_a_cpu_without_fp16(tmp_path):
    env = {**os.environ, "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "rdzv")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dtypes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert dtypes == {"False": ["torch.float32"] * 2, "True": ["torch.bfloat16"] * 2}
