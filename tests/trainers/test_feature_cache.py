"""Stage 2 and SFT on cached expert features (trainers/caches/features.py, trainers/stages/features.py): the same
projector (and SFT loss) as with the expert forwards, no expert forward in a stage of a trial that hits, one
computation for two processes that claim the same entry, the size bound, and a key that follows
every input."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.trainers.helpers_eagle import tiny_spec_dict, write_spec
from trainers.caches.features import FeatureCache, FeatureCacheError, feature_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One cache directory (synthetic data made once) for the trials of this module."""
    return tmp_path_factory.mktemp("feature_cache")


def _spec(tmp: Path, name: str, enabled: bool, second: str = "tiny-convnext", max_gb: float = 1.0,
          checkpoint_every: int = 100) -> Path:
    d = tiny_spec_dict(checkpoint_every=checkpoint_every)
    d.update(name=name, cache_dir=str(tmp / "cache"))
    d["data"]["synthetic"].update(n_pretrain=32)
    d["experts"] = [{"preset": "tiny-clip"}, {"preset": second}]
    d["train"]["stages"]["align_expert"]["max_steps"] = 2
    d["train"]["stages"]["align_projector"].update(epochs=2)  # 8 steps over 32 items: each image seen twice
    d["train"]["feature_cache"] = {"enabled": enabled, "max_gb": max_gb}
    return write_spec(d, tmp / f"{name}.yaml")


def _runner(tmp: Path, name: str, **kw):
    from trainers.training.distributed import DistEnv
    from trainers.launch import prepare_trial
    from trainers.stages.runner import TrialRunner

    spec, _, cache = prepare_trial(_spec(tmp, name, **kw), tmp / name)
    return TrialRunner(spec, tmp / name, DistEnv(), cache)


def _stage2(runner, monkeypatch) -> tuple[dict, dict[str, int]]:
    """Stages 1 and 2 in this process; the images each expert encoded in stage 2, by name."""
    from experts.base import VisionExpert
    from trainers.stages.pre_align import run_align_expert

    run_align_expert(runner)
    seen: dict[str, int] = {}
    forward = VisionExpert.forward

    def counting(self, images):
        seen[self.config.name] = seen.get(self.config.name, 0) + images.shape[0]
        return forward(self, images)

    monkeypatch.setattr(VisionExpert, "forward", counting)
    info = runner.run_simple_stage("align_projector", None, last=False)
    monkeypatch.setattr(VisionExpert, "forward", forward)
    return info, seen


def _projector(runner) -> dict[str, torch.Tensor]:
    return load_file(str(runner.stage_dir("align_projector") / "model" / "projector.safetensors"))


def test_cached_features_train_the_same_projector_and_a_sharing_trial_runs_no_forward(work, monkeypatch):
    tmp_path = work
    plain_runner = _runner(tmp_path, "plain", enabled=False)
    plain, plain_seen = _stage2(plain_runner, monkeypatch)
    assert plain_seen == {"tiny-clip": 64, "tiny-convnext": 64} and plain["feature_cache"] == {"expert_forwards": 128}

    first = _runner(tmp_path, "first", enabled=True)
    made, made_seen = _stage2(first, monkeypatch)
    fc = made["feature_cache"]
    assert made_seen == {"tiny-clip": 32, "tiny-convnext": 32}  # each image once, to fill the cache
    assert fc["expert_forwards"] == 0 and not any(e["cached"] for e in fc["experts"].values())
    assert [e["forwards_saved"] for e in fc["experts"].values()] == [32, 32]  # 64 seen - 32 computed
    assert fc["bytes"] == 32 * 16 * (32 + 64) * 2 + 2 * 32 * 8  # items x 4x4 tokens x channels, float16 and 0 < fc["bytes"] <= fc["cache_bytes"]
    # float16 features: the fp32 expert outputs rounded (relative 2^-11), so the projector after
    # 8 steps agrees to ~1e-4 of its weights' scale, and the losses to ~1e-4
    a, b = _projector(plain_runner), _projector(first)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=2e-3 * float(a[k].abs().max())), k
        assert not torch.equal(a[k], b[k]) or k.endswith("bias")  # really the rounded features
    assert made["last_loss"] == pytest.approx(plain["last_loss"], rel=1e-3)

    # killed after step 3 of 8 (checkpoint at 2) and resumed: the same projector as uninterrupted
    killed = _runner(tmp_path, "killed", enabled=True, checkpoint_every=2)
    killed.engine.stop_after = 3
    with pytest.raises(SystemExit, match="stop_after=3"):
        _stage2(killed, monkeypatch)
    again = _runner(tmp_path, "killed", enabled=True, checkpoint_every=2)
    resumed, _ = _stage2(again, monkeypatch)
    assert resumed["feature_cache"]["expert_forwards"] == 0 and resumed["steps"] == 8
    assert again.resumed_from["align_projector"] == 2
    c = _projector(again)
    assert all(torch.equal(b[k], c[k]) for k in b)

    sharing, sharing_seen = _stage2(_runner(tmp_path, "sharing", enabled=True, second="tiny-dinov2"), monkeypatch)
    fc = sharing["feature_cache"]
    assert fc["experts"]["tiny-clip"]["cached"] and not fc["experts"]["tiny-dinov2"]["cached"]
    assert fc["experts"]["tiny-clip"]["key"] == made["feature_cache"]["experts"]["tiny-clip"]["key"]
    assert sharing_seen == {"tiny-dinov2": 32} and fc["expert_forwards"] == 0  # no tiny-clip forward at all
    assert fc["experts"]["tiny-clip"]["forwards_saved"] == 64 and fc["experts"]["tiny-clip"]["saved_process_s"] > 0


def _sft(runner, monkeypatch) -> tuple[dict, dict[str, int]]:
    """SFT in this process after stages 1 and 2; the images each expert encoded in it, by name."""
    from experts.base import VisionExpert

    _stage2(runner, monkeypatch)
    seen: dict[str, int] = {}
    forward = VisionExpert.forward

    def counting(self, images):
        seen[self.config.name] = seen.get(self.config.name, 0) + images.shape[0]
        return forward(self, images)

    monkeypatch.setattr(VisionExpert, "forward", counting)
    info = runner.run_simple_stage("sft", "align_projector", last=False)
    monkeypatch.setattr(VisionExpert, "forward", forward)
    return info, seen


def test_sft_on_frozen_experts_reads_cached_features_and_learns_the_same(work, monkeypatch):
    plain, plain_seen = _sft(_runner(work, "sft_plain", enabled=False), monkeypatch)
    assert plain_seen == {"tiny-clip": 64, "tiny-convnext": 64}  # 8 steps x 8 items over 64 SFT items
    made, made_seen = _sft(_runner(work, "sft_made", enabled=True), monkeypatch)
    fc = made["feature_cache"]
    assert made_seen == {"tiny-clip": 64, "tiny-convnext": 64} and fc["expert_forwards"] == 0  # made, not in the loop
    assert [e["items"] for e in fc["experts"].values()] == [64, 64] and not any(e["cached"] for e in fc["experts"].values())
    assert made["steps"] == plain["steps"] == 8
    assert made["last_loss"] == pytest.approx(plain["last_loss"], rel=1e-3)  # float16 features: equal to ~1e-7 here

    shared, shared_seen = _sft(_runner(work, "sft_shared", enabled=True, second="tiny-dinov2"), monkeypatch)
    sfc = shared["feature_cache"]["experts"]
    assert sfc["tiny-clip"]["cached"] and sfc["tiny-clip"]["key"] == fc["experts"]["tiny-clip"]["key"]
    assert shared_seen == {"tiny-dinov2": 64} and sfc["tiny-clip"]["forwards_saved"] == 64

    # an expert that trains in SFT: its outputs change every step, so SFT runs the experts
    runner = _runner(work, "sft_trains", enabled=True)
    runner.spec.experts[0] = runner.spec.experts[0].model_copy(update={"freeze": False})
    trains, trains_seen = _sft(runner, monkeypatch)
    assert trains["feature_cache"]["off"] == "expert tiny-clip trains in sft"
    assert trains_seen == {"tiny-clip": 64, "tiny-convnext": 64}


def _max_gb(runner, value: float) -> None:
    fc = runner.spec.train.feature_cache.model_copy(update={"max_gb": value})
    runner.spec = runner.spec.model_copy(update={"train": runner.spec.train.model_copy(update={"feature_cache": fc})})


def test_features_over_the_bound_or_float16_fail_with_no_entry(work, monkeypatch):
    from experts.base import VisionExpert
    from trainers.launch import prepare_trial
    from trainers.spec import SpecError
    from trainers.stages.pre_align import run_align_expert

    with pytest.raises(SpecError, match=r"train.feature_cache.max_gb: 1e-06, but this trial's 2 experts' features "
                                        r"over 96 items need 0.000296 GB"):  # (32 + 64 SFT) x 16 x (32 + 64) x 2 B + 8 B an item
        prepare_trial(_spec(work, "small", enabled=True, max_gb=1e-6, second="tiny-sam"), work / "small")
    runner = _runner(work, "small", enabled=True, second="tiny-sam")
    run_align_expert(runner)
    features = work / "cache" / "features"
    before = sorted(os.listdir(features)) if features.is_dir() else []
    _max_gb(runner, 1e-6)  # the check at stage 2's start (what real data, of unknown size at launch, meets)
    with pytest.raises(FeatureCacheError, match=r"train.feature_cache.max_gb=1e-06: this trial's 2 experts"):
        runner.run_simple_stage("align_projector", None, last=False)
    assert sorted(os.listdir(features)) == before  # nothing computed, nothing evicted

    # an expert output float16 cannot hold is an error, and no entry is published
    _max_gb(runner, 1.0)
    forward = VisionExpert.forward
    monkeypatch.setattr(VisionExpert, "forward", lambda self, images: forward(self, images) * 1e9)
    with pytest.raises(FeatureCacheError, match="expert tiny-(clip|sam): output magnitude .* does not fit float16"):
        runner.run_simple_stage("align_projector", None, last=False)
    assert [p for p in sorted(os.listdir(features)) if not p.startswith(".")] == [p for p in before if not p.startswith(".")]


def _entry(cache: FeatureCache, key: str, items: int, used: float) -> None:
    tmp = cache.begin(key)
    np.save(tmp / "shard0.npy", np.full((items, 4, 8), 0.5, dtype=np.float16))
    np.save(tmp / "src0.npy", np.arange(items))
    cache.publish(key, tmp, {"items": items, "world_size": 1, "process_s": 1.0})
    os.utime(cache.path(key) / "meta.json", (used, used))


def test_eviction_drops_the_least_recently_used_and_never_a_kept_entry(tmp_path):
    cache = FeatureCache(tmp_path)
    now = time.time()
    _entry(cache, "old", 10, now - 300)
    _entry(cache, "kept", 10, now - 400)
    _entry(cache, "new", 10, now - 500)
    cache.open("new")  # a read is a use
    sizes = {k: b for k, b, _ in cache.entries()}
    total = sum(sizes.values())
    evicted = cache.make_room(sizes["old"], total, keep={"kept"})
    assert [e["key"] for e in evicted] == ["old"] and not cache.has("old") and cache.has("kept")
    assert cache.size_bytes() == total - sizes["old"] and cache.make_room(sizes["old"], total, keep=set()) == []
    with pytest.raises(FeatureCacheError, match="max_gb"):
        cache.make_room(total, total, keep={"kept", "new"})


def test_an_entry_reads_by_item_across_shards_and_pickles_without_its_maps(tmp_path):
    cache = FeatureCache(tmp_path)
    tmp = cache.begin("k")
    for r in range(2):  # item i in shard i % 2, row i // 2
        rows = np.arange(r, 5, 2)
        np.save(tmp / f"shard{r}.npy", np.stack([np.full((3, 2), i, dtype=np.float16) for i in rows]))
        np.save(tmp / f"src{r}.npy", rows + 100)
    cache.publish("k", tmp, {"items": 5, "world_size": 2})
    entry = cache.open("k")
    assert [float(entry.row(i)[0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
    assert entry.sources().tolist() == [100, 101, 102, 103, 104]
    again = pickle.loads(pickle.dumps(entry))
    assert again._maps is None and float(again.row(3)[2, 1]) == 3


CLAIMER = """
import sys, time
import numpy as np
from trainers.caches.features import FeatureCache
from trainers.stages.pre_align import claim
root, key, tag = sys.argv[1:]
cache = FeatureCache(root)
fd = claim(cache, key, "tiny-clip", is_main=True, poll_s=0.05, what="feature")
if fd is not None:
    tmp = cache.begin(key)
    time.sleep(0.5)  # the other process polls meanwhile
    np.save(tmp / "shard0.npy", np.full((4, 2, 2), 7, dtype=np.float16))
    np.save(tmp / "src0.npy", np.arange(4))
    cache.publish(key, tmp, {"items": 4, "world_size": 1, "by": tag})
    cache.unlock(fd)
print(tag, "made" if fd is not None else "read", float(cache.open(key).row(3).sum()), cache.meta(key)["by"])
"""


def test_two_processes_claiming_one_entry_compute_it_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path), "k", t], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
             for t in "ab"]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(o[1] for o in outs) == ["made", "read"]
    maker = next(o[0] for o in outs if o[1] == "made")
    assert all(o[2] == "28.0" and o[3] == maker for o in outs)  # both read the one entry the maker wrote


def test_the_key_changes_with_every_input():
    base = dict(stage1_key="s1", data_identity={"synthetic": "abc"}, records="r0", image_size=64, precision="fp32",
                code="c0")
    k = feature_key(**base)
    changes = dict(stage1_key="s2", data_identity={"synthetic": "abd"}, records="r1", image_size=96,
                   precision="bf16", code="c1")
    keys = {feature_key(**{**base, f: v}) for f, v in changes.items()}
    assert k == feature_key(**base) and len(keys) == len(changes) and k not in keys
    assert feature_key(**{**base, "code": None}) != k  # the default: the hash of the code it depends on


def test_records_digest_follows_the_records_read():
    from types import SimpleNamespace as NS

    from trainers.caches.features import records_digest

    def data(ids):
        return NS(records=[NS(id=str(i), image=f"{i}.png") for i in ids])

    assert records_digest(data([0, 1, 2, 3])) == records_digest(data([0, 1, 2, 3]))
    assert records_digest(data([0, 1, 3])) != records_digest(data([0, 1, 2, 3]))  # record 2 skipped
    assert records_digest(data([1, 0, 2, 3])) != records_digest(data([0, 1, 2, 3]))  # another order


def test_toggling_the_cache_keeps_a_trial_directory_resumable():
    from trainers.launch import spec_state
    from trainers.spec import SpecError, parse_trial_spec

    d = tiny_spec_dict()
    off = spec_state(parse_trial_spec(d, "t"))
    d["train"]["feature_cache"] = {"enabled": True, "max_gb": 3}
    assert spec_state(parse_trial_spec(d, "t"))["hash"] == off["hash"]
    d["train"]["checkpoint_every"] = 7  # any other setting still counts
    assert spec_state(parse_trial_spec(d, "t"))["hash"] != off["hash"]
    with pytest.raises(SpecError, match="train.feature_cache.max_gb: Input should be greater than 0"):
        parse_trial_spec({**d, "train": {**d["train"], "feature_cache": {"max_gb": 0}}}, "t")
    with pytest.raises(SpecError, match="train.feature_cache.size: unknown key"):
        parse_trial_spec({**d, "train": {**d["train"], "feature_cache": {"size": 1}}}, "t")
