"""Stage-1 cache: content-hash keys, atomic commit, a lock that serialises concurrent trials."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.caches.stage1 import ROOT, STAGE1_CODE, Stage1Cache, code_version, file_identity, stage1_key
from trainers.caches.features import FEATURE_CODE
from trainers.skills.train import SKILL_CODE

BASE = dict(expert_config={"name": "tiny-clip", "input_size": 64}, align_llm={"preset": "tiny-llama"},
            data_identity={"synthetic": "abc"}, hyper_params={"lr": 1e-3}, seed=0, template="plain",
            projector="mlp2x_gelu", precision="fp32", code="c0")


def test_key_is_stable_and_changes_with_every_input():
    k = stage1_key(**BASE)
    assert k == stage1_key(**dict(BASE)) and len(k) == 24
    changes = dict(expert_config={"name": "tiny-clip", "input_size": 96}, align_llm={"preset": "small-llama"},
                   data_identity={"synthetic": "abd"}, hyper_params={"lr": 2e-3}, seed=1, template="vicuna_v1",
                   projector="linear", precision="bf16", code="c1")
    keys = {stage1_key(**{**BASE, field: value}) for field, value in changes.items()}
    assert len(keys) == len(changes) and k not in keys


def _copy_code(root: Path, parts: tuple[str, ...]) -> None:
    for part in parts:
        src, dst = ROOT / part, root / part
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


@pytest.mark.parametrize("parts", [STAGE1_CODE, FEATURE_CODE, SKILL_CODE], ids=["stage1", "features", "skills"])
def test_moving_a_code_file_keeps_the_cached_entry(tmp_path, parts):
    root = tmp_path / "repo"
    _copy_code(root, parts)
    assert code_version(parts, root) == code_version(parts)  # the copy's key is the checkout's
    cache = Stage1Cache(tmp_path / "cache")
    key = stage1_key(**{**BASE, "code": code_version(parts, root)})
    cache.commit(key, lambda d: (d.mkdir(), (d / "w").write_text("x")), {})
    moved = next(p for p in parts if p.endswith(".py"))
    new_place = "trainers/moved/" + Path(moved).name
    (root / new_place).parent.mkdir(parents=True, exist_ok=True)
    (root / moved).rename(root / new_place)
    moved_parts = tuple(new_place if p == moved else p for p in parts)
    assert cache.has(stage1_key(**{**BASE, "code": code_version(moved_parts, root)}))
    with pytest.raises(FileNotFoundError, match=f"{moved!r} is not under"):
        code_version(parts, root)  # a stale code list is loud, never a silent new key
    (root / new_place).write_text((root / new_place).read_text() + "\n# changed\n")
    assert not cache.has(stage1_key(**{**BASE, "code": code_version(moved_parts, root)}))


def test_file_identity_follows_content(tmp_path):
    p = tmp_path / "d.json"
    p.write_text("[1]")
    a = file_identity(p)
    p.write_text("[2]")
    assert file_identity(p) != a


def test_commit_is_atomic_and_readable(tmp_path):
    cache = Stage1Cache(tmp_path)
    assert not cache.has("k1")
    with pytest.raises(FileNotFoundError, match="no completed entry"):
        cache.expert_dir("k1")

    def broken(d: Path):
        d.mkdir()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.commit("k1", broken, {})
    assert not cache.has("k1")  # a failed write leaves no entry
    cache.commit("k1", lambda d: (d.mkdir(), (d / "w").write_text("x")), {"expert": "e"})
    assert cache.has("k1") and (cache.expert_dir("k1") / "w").read_text() == "x"
    assert cache.meta("k1")["expert"] == "e"


HOLDER = """
import sys, time
from trainers.caches.stage1 import Stage1Cache
root, key, log, tag = sys.argv[1:]
with Stage1Cache(root).lock(key, poll_s=0.02):
    open(log, "a").write(tag + " in\\n")
    time.sleep(0.4)
    open(log, "a").write(tag + " out\\n")
"""


def test_lock_excludes_a_second_process(tmp_path):
    log = tmp_path / "log"
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "k", str(log), t], cwd=root)
             for t in "ab"]
    assert [p.wait(60) for p in procs] == [0, 0]
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [x[1] for x in lines] == ["in", "out", "in", "out"]  # never both inside
    assert lines[0][0] == lines[1][0] and lines[2][0] == lines[3][0]
