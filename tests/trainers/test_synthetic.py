"""Synthetic scenes: determinism, closed answer sets, image/answer dependence, learnability."""
import hashlib
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainers.data.errors import DataError, UnknownNameError
from trainers.data.llava import LlavaDataset
from trainers.data.prompts import MULTIPLE_CHOICE_SUFFIX, SHORT_ANSWER_SUFFIX
from trainers.data.synthetic import (
    ANSWER_SETS,
    KINDS,
    ensure_synthetic,
    make_item,
    vocab_texts,
    write_heldout,
    write_pretrain,
    write_sft,
)
from trainers.data.synthetic_yesno import SFT_KINDS, SFT_MIX
from trainers.data.tokenizer import build_word_tokenizer
from trainers.spec import SyntheticSpec


def _digest(directory):
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(directory).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_writers_are_deterministic(tmp_path):
    for sub in ("a", "b"):
        write_pretrain(tmp_path / sub, 12, seed=3, image_size=32)
        write_sft(tmp_path / sub, len(SFT_MIX), seed=3, image_size=32)  # one cycle of the mix
        write_heldout(tmp_path / sub, 4, seed=3, image_size=32)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_sft(tmp_path / "c", 16, seed=4, image_size=32)
    assert (tmp_path / "c" / "sft.json").read_bytes() != (tmp_path / "a" / "sft.json").read_bytes()
    sft = json.loads((tmp_path / "a" / "sft.json").read_text())
    assert [r["kind"] for r in sft] == list(SFT_MIX) and set(SFT_MIX) == set(SFT_KINDS)
    assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in sft)
    pre = json.loads((tmp_path / "a" / "pretrain.json").read_text())
    assert all(r["conversations"][0]["value"] == "<image>" for r in pre)
    heldout = json.loads((tmp_path / "a" / "heldout.json").read_text())
    assert heldout[0]["image"] != sft[0]["image"]
    with pytest.raises(DataError, match="n must be a positive integer"):
        write_sft(tmp_path / "d", 0, seed=0, image_size=32)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_answers_closed_sets_and_images_depend_on_answers(kind):
    rng = random.Random(7)
    items = [make_item(rng, kind, 64) for _ in range(120)]
    answers = {it.answer for it in items}
    assert answers <= set(ANSWER_SETS[kind]) and len(answers) >= 2
    suffix = MULTIPLE_CHOICE_SUFFIX if kind == "choice" else SHORT_ANSWER_SUFFIX
    for it in items:
        assert it.kind == kind and it.question.endswith(suffix) and it.caption
        assert it.image.size == (64, 64) and it.image.mode == "RGB"
        if kind == "choice":
            assert len(it.options) == 4 and "A. " + it.options[0] in it.question
        else:
            assert it.options is None
    if kind != "choice":  # (choice: the answer letter depends on the option order in the text)
        # the question alone cannot give the answer: a per-question majority vote stays low
        by_question = {}
        for it in items:
            by_question.setdefault(it.question, []).append(it.answer)
        oracle = sum(max(a.count(x) for x in set(a)) for a in by_question.values()) / len(items)
        assert oracle < 0.75, f"{kind}: answers predictable from the question ({oracle:.2f})"
    # items with different answers never share an image
    by_image = {}
    for it in items:
        by_image.setdefault(it.image.tobytes(), set()).add(it.answer)
    assert all(len(a) == 1 for a in by_image.values())


def test_make_item_errors():
    with pytest.raises(UnknownNameError, match="known: cell, choice, colour, count"):
        make_item(random.Random(0), "texture", 64)
    with pytest.raises(DataError, match="image_size must be an integer >= 16"):
        make_item(random.Random(0), "colour", 8)


def test_vocab_covers_every_answer_and_synthetic_loads(tmp_path):
    paths = ensure_synthetic(SyntheticSpec(n_pretrain=8, n_sft=16, n_heldout=8, image_size=32), tmp_path)
    tok = build_word_tokenizer(vocab_texts(), tmp_path / "tok")
    vocab = tok.get_vocab()
    for answers in ANSWER_SETS.values():
        assert all(a in vocab for a in answers)  # as written: "B" decodes as "B"
    for split, template in (("pretrain", "plain"), ("sft", "vicuna_v1"), ("heldout", "llama3")):
        ds = LlavaDataset(paths[split], paths["image_folder"], 32, tokenizer=tok, template=template, max_length=256)
        for i in range(len(ds)):
            item = ds[i]
            assert item["has_image"] and tok.unk_token_id not in item["input_ids"].tolist()


_ENSURE = """
import json, sys
from trainers.data.synthetic import ensure_synthetic
from trainers.spec import SyntheticSpec
out = ensure_synthetic(SyntheticSpec(**json.loads(sys.argv[1])), sys.argv[2])
print(json.dumps({k: str(v) for k, v in out.items()}))
"""


def test_ensure_synthetic_reuses_and_survives_races(tmp_path):
    spec = dict(n_pretrain=16, n_sft=16, n_heldout=8, image_size=32, seed=1)
    # two fresh interpreters at once (a fork of this threaded test process can deadlock)
    procs = [subprocess.Popen([sys.executable, "-c", _ENSURE, json.dumps(spec), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0] == results[1]
    root = tmp_path / "synthetic"
    assert [p.name for p in root.iterdir()] == [results[0]["dir"].rsplit("/", 1)[1]]  # no temp leftovers
    before = _digest(root)
    again = ensure_synthetic(SyntheticSpec(**spec), tmp_path)
    assert str(again["sft"]) == results[0]["sft"] and _digest(root) == before
    other = ensure_synthetic(SyntheticSpec(**{**spec, "seed": 2}), tmp_path)
    assert other["dir"] != again["dir"]
    fixed = SyntheticSpec(**{**spec, "dir": str(again["dir"]), "seed": 5})
    with pytest.raises(DataError, match="holds synthetic data of another spec"):
        ensure_synthetic(fixed, tmp_path)


def _pixels(kind, n, seed):
    rng = random.Random(seed)
    items = [make_item(rng, kind, 64) for _ in range(n)]
    x = torch.tensor(np.stack([np.asarray(it.image) for it in items])).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor([ANSWER_SETS[kind].index(it.answer) for it in items])


@pytest.mark.parametrize("kind", ["colour", "shape"])
def test_images_carry_the_answer(kind):
    """A tiny CNN on raw 64 px pixels learns the answer far above chance in 150 steps."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; one thread is fastest here
    try:
        x_train, y_train = _pixels(kind, 256, 1)
        x_test, y_test = _pixels(kind, 128, 2)
        n_classes = len(ANSWER_SETS[kind])
        net = nn.Sequential(
            nn.AvgPool2d(2), nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(32, n_classes),
        )
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(150):
            idx = torch.randint(0, len(x_train), (32,), generator=gen)
            loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            acc = (net(x_test).argmax(1) == y_test).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 2
    assert acc > 0.8, f"{kind}: held-out accuracy {acc:.2f} (chance {1 / n_classes:.2f})"
