"""Skilled init of the tiny experts (trainers/skills): every skill's pre-training lowers its own loss,
the cache is keyed by content, deterministic by seed, reused and safe under concurrent claims, and
a trial asks for it per expert entry (`skill: true`; the default keeps the random init)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

import experts
from trainers.skills import train as T
from trainers.skills.tasks import FAMILY_SKILL, SKILLS, augment, make_data

FAST = T.SkillRecipe(steps=40, batch_size=16, n_train=128, n_eval=64, probe_steps=40, step_scale=())
TINY = T.SkillRecipe(steps=3, batch_size=8, n_train=16, n_eval=32, probe_steps=3, step_scale=())


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setattr(T, "DEFAULT_RECIPE", TINY)


def _cfg(name: str = "tiny-dinov2"):
    return experts.get_preset(name)


def test_every_tiny_expert_has_its_own_skill():
    skills = [FAMILY_SKILL[experts.get_preset(p).family] for p in experts.TINY_PRESETS]
    assert sorted(skills) == sorted(SKILLS)


def test_skill_data_is_deterministic_by_seed():
    a, b, c = (make_data("count", 8, s, 64, "train") for s in (0, 0, 1))
    assert torch.equal(a.images, b.images) and torch.equal(a.target, b.target)
    assert not torch.equal(a.images, c.images)
    assert a.target.shape == (8, 1) and a.target.min() >= 1  # every scene holds a shape


def test_rotation_batches_turn_again_and_the_label_follows():
    data = make_data("rotation", 16, 0, 64, "train")
    images, target = augment("rotation", data.images, data.target, torch.Generator().manual_seed(0))
    assert not torch.equal(target, data.target)
    for img, t, orig, t0 in zip(images, target, data.images, data.target):  # turned back: the same upright scene
        assert torch.equal(torch.rot90(img, -int(t), dims=(1, 2)), torch.rot90(orig, -int(t0), dims=(1, 2)))
    count = make_data("count", 4, 0, 64, "train")
    same = augment("count", count.images, count.target, torch.Generator())
    assert same[0] is count.images and same[1] is count.target


@pytest.mark.parametrize("name", experts.TINY_PRESETS)
def test_each_skill_pretraining_lowers_its_own_loss(name):
    _, stats = T.train_skill(_cfg(name), 0, FAST)
    assert stats["skill"] == FAMILY_SKILL[_cfg(name).family]
    assert stats["last_loss"] < 0.9 * stats["first_loss"], stats


def test_reading_and_masks_become_decodable():
    """The two skills no random-init feature carries: a probe on the trained tokens beats the random init's."""
    recipe = T.SkillRecipe(steps=120, n_train=192, n_eval=64, probe_steps=40, step_scale=())
    for name in ("tiny-pix2struct", "tiny-sam"):
        torch.manual_seed(0)
        random_init = T.probe(experts.build_expert(_cfg(name)), FAMILY_SKILL[_cfg(name).family], 0, recipe)
        _, stats = T.train_skill(_cfg(name), 0, recipe)
        assert stats["metric_trained_head"] > random_init + 0.1, (random_init, stats)


def test_slow_skills_train_longer():
    recipe = T.SkillRecipe(**{**vars(TINY), "step_scale": (("rotation", 3.0), ("read", 1.5))})
    assert [recipe.steps_for(s) for s in ("mask", "read", "rotation")] == [3, 4, 9]
    _, stats = T.train_skill(_cfg("tiny-dinov2"), 0, recipe)
    assert stats["steps"] == 9


def test_training_is_deterministic_by_seed():
    a, _ = T.train_skill(_cfg(), 0, TINY)
    b, _ = T.train_skill(_cfg(), 0, TINY)
    c, _ = T.train_skill(_cfg(), 1, TINY)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_key_covers_what_determines_the_weights():
    base = T.skill_key(_cfg(), 0, TINY)
    assert T.skill_key(_cfg(), 0, TINY) == base
    others = {T.skill_key(_cfg(), 1, TINY), T.skill_key(_cfg(), 0, FAST),
              T.skill_key(_cfg(), 0, T.SkillRecipe(**{**vars(TINY), "step_scale": (("rotation", 2.0),)})),
              T.skill_key(_cfg().with_overrides(input_size=70, arch={**_cfg().arch, "image_size": 70}), 0, TINY),
              T.skill_key(_cfg("tiny-clip"), 0, TINY)}
    assert base not in others and len(others) == 5
    assert T.skill_key(_cfg().with_overrides(freeze=False), 0, TINY) == base  # an SFT setting


def test_cache_trains_once_and_reuses(tmp_path, tiny_recipe, monkeypatch):
    calls = []
    real = T.train_skill
    monkeypatch.setattr(T, "train_skill", lambda *a, **k: calls.append(a[0].name) or real(*a, **k))
    cache = T.SkillCache(tmp_path)
    first = cache.ensure([_cfg(), _cfg("tiny-clip")])
    again = T.SkillCache(tmp_path).ensure([_cfg()])
    assert calls == ["tiny-dinov2", "tiny-clip"] and again == first[:1]
    meta = cache.meta(first[0].parent.name)
    assert len(meta["weights_sha256"]) == 64 and meta["skill"] == "rotation"
    loaded = experts.load_expert(first[0])
    assert loaded.config.family == "dinov2"


def test_concurrent_claims_train_each_entry_once(tmp_path, tiny_recipe, monkeypatch):
    calls = []
    real = T.train_skill
    monkeypatch.setattr(T, "train_skill", lambda *a, **k: calls.append(a[0].name) or real(*a, **k))
    results = []
    workers = [threading.Thread(target=lambda: results.append(T.SkillCache(tmp_path).ensure([_cfg()], poll_s=0.05)))
               for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert calls == ["tiny-dinov2"] and len(results) == 3 and len({str(r[0]) for r in results}) == 1


def test_a_claim_held_elsewhere_is_waited_for(tmp_path, tiny_recipe):
    from trainers.caches.claims import FileClaim

    key = T.skill_key(_cfg())
    held = FileClaim(tmp_path / "skills" / f"{key}.lock")
    (tmp_path / "skills").mkdir()
    assert held.acquire() is not None
    done = []
    waiter = threading.Thread(target=lambda: done.append(T.SkillCache(tmp_path).ensure([_cfg()], poll_s=0.05)))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not done  # waits while another process trains it
    expert, stats = T.train_skill(_cfg())
    T.SkillCache(tmp_path)._commit(key, expert, stats)
    held.release()
    waiter.join(timeout=30)
    assert done and done[0][0] == T.SkillCache(tmp_path).expert_dir(key)


def test_trial_entries_choose_skilled_or_random_init(tmp_path, tiny_recipe):
    from trainers.launch import spec_state
    from trainers.spec import parse_trial_spec
    from trainers.stages.recipes import resolve_experts

    d = {"experts": [{"preset": "tiny-sam", "skill": True}, {"preset": "tiny-clip"}],
         "llm": {"preset": "tiny-llama"}, "data": {"synthetic": {}}}
    spec = parse_trial_spec(d, "t")
    skilled, plain = resolve_experts(spec, tmp_path)
    assert skilled.pretrained and T.skill_weights(skilled) is not None
    assert not plain.pretrained and plain.source is None and T.skill_weights(plain) is None
    assert resolve_experts(spec)[0].source is None  # without a cache: the architecture only
    built = experts.build_expert(skilled)
    saved = experts.load_expert(skilled.source)
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in built.state_dict().items())
    d["experts"][0]["skill"] = False
    assert spec_state(parse_trial_spec(d, "t"))["hash"] != spec_state(spec)["hash"]


def test_a_named_skill_permutes_the_design_and_the_skill_seed_is_the_trial_s(tmp_path, tiny_recipe, monkeypatch):
    """`skill: read` on a DINOv2 pre-trains it on reading (a permuted design); `skill_seed` varies
    the pre-training; the family's own skill by name is the same entry as `skill: true`."""
    from trainers.spec import parse_trial_spec
    from trainers.stages.recipes import resolve_experts

    assert T.skill_key(_cfg(), 0, TINY, "rotation") == T.skill_key(_cfg(), 0, TINY)
    assert T.skill_key(_cfg(), 0, TINY, "read") != T.skill_key(_cfg(), 0, TINY)
    calls = []
    real = T.train_skill
    monkeypatch.setattr(T, "train_skill", lambda *a, **k: calls.append((a[0].name, a[1], a[3])) or real(*a, **k))

    def entry(seed: int, skill):
        d = {"experts": [{"preset": "tiny-dinov2", "skill": skill}], "llm": {"preset": "tiny-llama"},
             "data": {"synthetic": {}}, "skill_seed": seed}
        return resolve_experts(parse_trial_spec(d, "t"), tmp_path)[0]

    read0, read1, own = entry(0, "read"), entry(1, "read"), entry(0, True)
    assert calls == [("tiny-dinov2", 0, "read"), ("tiny-dinov2", 1, "read"), ("tiny-dinov2", 0, True)]
    metas = [T.SkillCache(tmp_path).meta(Path(c.source).parent.name) for c in (read0, read1, own)]
    assert [m["skill"] for m in metas] == ["read", "read", "rotation"]
    assert len({m["weights_sha256"] for m in metas}) == 3
    assert T.skill_keys(parse_trial_spec({"experts": [{"preset": "tiny-dinov2", "skill": "read"}],
                                          "llm": {"preset": "tiny-llama"}, "data": {"synthetic": {}}, "skill_seed": 1},
                                         "t")) == {"0": Path(read1.source).parent.name}


def test_an_unknown_skill_name_is_one_line():
    from trainers.spec import SpecError, parse_trial_spec

    with pytest.raises(SpecError, match=r"experts\.0\.skill") as err:
        parse_trial_spec({"experts": [{"preset": "tiny-dinov2", "skill": "juggle"}], "llm": {"preset": "tiny-llama"},
                          "data": {"synthetic": {}}}, "t")
    assert "\n" not in str(err.value) and "unknown skill 'juggle'" in str(err.value) and "read" in str(err.value)


def test_skill_on_a_family_without_one_is_one_line(tmp_path):
    from trainers.validate import validate_spec
    from trainers.spec import SpecError, parse_trial_spec

    spec = parse_trial_spec({"experts": [{"preset": "tiny-timm-vit", "skill": True}], "llm": {"preset": "tiny-llama"},
                             "data": {"synthetic": {}}}, "t")
    with pytest.raises(SpecError, match=r"experts\.0\.skill: .*no synthetic skill for family 'timm'"):
        validate_spec(spec, "t.yaml", 1)


_TRAIN = """
import json, sys
import experts
from trainers.skills import train as T
T.DEFAULT_RECIPE = T.SkillRecipe(steps=3, batch_size=8, n_train=16, n_eval=32, probe_steps=3)
key = T.SkillCache(sys.argv[1]).ensure([experts.get_preset("tiny-dinov2")])[0].parent.name
print(T.SkillCache(sys.argv[1]).meta(key)["weights_sha256"])
"""


def test_separate_processes_train_identical_weights(tmp_path):
    """Two fresh interpreters, each on its own cache, write byte-identical skilled weights."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _TRAIN, str(tmp_path / str(i))], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    digests = [out.strip().splitlines()[-1] for out, _ in outs]
    assert digests[0] == digests[1] and len(digests[0]) == 64
