"""The training-free pre-screen (trainers/prescreen): CKA's invariances, the closed-form probe's
leave-one-out, the candidate scores on constructed features, and feature extraction on tiny
random-init experts."""
from __future__ import annotations

import time

import pytest
import torch

from trainers.prescreen.probe import Task, loo_fit, tasks_of
from trainers.prescreen.score import order, round_scores
from trainers.prescreen.similarity import centred_kernel, hsic, kernel_cka, linear_cka


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cka_of_identical_features_is_one():
    x = torch.randn(200, 4, 8, generator=_gen())
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x, pooled=True) == pytest.approx(1.0)


def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling():
    x = torch.randn(300, 16, generator=_gen(1)).double()
    y = torch.randn(300, 12, generator=_gen(2)).double() + x[:, :12]  # related, so CKA is well inside (0, 1)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=_gen(3)).double())
    base = linear_cka(x, y)
    assert 0.2 < base < 0.95
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-9)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x + 3.0, y) == pytest.approx(base, abs=1e-9)  # centred first


def test_cka_of_independent_features_is_near_zero():
    x = torch.randn(4000, 10, generator=_gen(4))
    y = torch.randn(4000, 10, generator=_gen(5))
    assert linear_cka(x, y) < 0.02  # about sqrt(d1 d2) / n for independent Gaussians


def test_wide_features_take_the_gram_path_with_the_same_value():
    x = torch.randn(20, 300, generator=_gen(6)).double()
    y = torch.randn(20, 200, generator=_gen(7)).double()
    x, y = x - x.mean(0), y - y.mean(0)
    assert float(hsic(x, y)) == pytest.approx(float((x.T @ y).pow(2).sum()), rel=1e-9)
    assert kernel_cka(x @ x.T, y @ y.T) == pytest.approx(linear_cka(x, y), abs=1e-9)


def test_probe_leave_one_out_matches_refitting_without_each_item():
    n, lam = 40, 0.1
    labels = torch.arange(n) % 3
    x = torch.nn.functional.one_hot(labels).double() + 0.8 * torch.randn(n, 3, generator=_gen(8)).double()
    k = x @ x.T
    got = loo_fit(k, labels, lambdas=(lam,))
    kb = k / k.diagonal().mean() + 1.0  # the probe's kernel: scaled, with the intercept's constant
    y = torch.nn.functional.one_hot(labels).double()
    hits, sq = 0, 0.0
    for i in range(n):
        keep = torch.tensor([j for j in range(n) if j != i])
        alpha = torch.linalg.solve(kb[keep][:, keep] + lam * torch.eye(n - 1, dtype=torch.float64), y[keep])
        pred = kb[i, keep] @ alpha
        hits += int(pred.argmax() == labels[i])
        sq += float((y[i] - pred).pow(2).sum())
    assert got["accuracy"] == pytest.approx(hits / n)
    var = float((y - y.mean(0)).pow(2).mean())
    assert got["r2"] == pytest.approx(1 - sq / (n * 3) / var, abs=1e-9)


def test_tasks_keep_only_kinds_the_image_decides():
    kinds = ["colour"] * 10 + ["exists"] * 10 + ["cell"] * 10 + ["word"] * 3
    answers = ["red", "blue"] * 5 + ["yes", "no"] * 5 + ["1", "2"] * 5 + ["cat", "dog", "sun"]
    tasks = tasks_of(kinds, answers)
    assert [t.kind for t in tasks] == ["colour"]  # yes/no and table cells turn on the question; 3 words too few
    assert isinstance(tasks[0], Task) and tasks[0].labels.tolist() == [1, 0] * 5


def _constructed(n: int = 360):
    """A encodes colour, B noise; 'dup' is A turned and rescaled, 'new' encodes the word A+B lack."""
    g = _gen(9)
    kinds = ["colour" if i % 2 == 0 else "word" for i in range(n)]
    colour = torch.randint(0, 4, (n,), generator=g)
    word = torch.randint(0, 6, (n,), generator=g)
    answers = [f"c{int(c)}" if k == "colour" else f"w{int(w)}" for k, c, w in zip(kinds, colour, word)]

    def encode(labels, classes):
        code = torch.randn(classes, 4, 8, generator=g)
        return code[labels] + 0.5 * torch.randn(n, 4, 8, generator=g)

    a = encode(colour, 4)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    tokens = {"A": a, "B": torch.randn(n, 4, 8, generator=g), "dup": 3.0 * a @ q, "new": encode(word, 6)}
    return tokens, kinds, answers


@pytest.mark.parametrize("pooled", [False, True])
def test_a_candidate_with_new_information_outscores_a_duplicate(pooled):
    tokens, kinds, answers = _constructed()
    res = round_scores(tokens, kinds, answers, ["A", "B"], ["dup", "new"], pooled)
    for method in ("probe_gain", "probe_gain_r2", "alignment_gain", "complementarity"):  # probe_alone: blind to the mixture
        assert order(res.scores[method]) == ["new", "dup"], method
    assert res.scores["complementarity"]["dup"] == pytest.approx(0.0, abs=1e-6)  # CKA 1 with A
    assert res.scores["probe_gain"]["new"] > 0.2
    assert abs(res.scores["probe_gain"]["dup"]) < 0.1
    assert res.probes["A+B+new"]["word"] > res.probes["A+B"]["word"] + 0.3


def test_kernels_weigh_experts_alike_whatever_their_width():
    k = centred_kernel(torch.randn(50, 16, 64, generator=_gen(10)))
    assert float(k.diagonal().mean()) == pytest.approx(1.0)


def test_features_of_tiny_random_init_experts(tmp_path):
    from trainers.prescreen.features import extract
    from trainers.spec import parse_trial_spec

    presets = ["tiny-clip", "tiny-convnext", "tiny-eva02"]
    spec = parse_trial_spec({"experts": [{"preset": p} for p in presets],
                             "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
                             "data": {"synthetic": {"seed": 0, "image_size": 32, "n_pretrain": 8, "n_sft": 40,
                                                    "n_heldout": 4}}})
    t = time.perf_counter()
    feats = extract(spec, tmp_path / "cache", n_images=24, batch_size=10)
    assert time.perf_counter() - t < 30
    assert list(feats.tokens) == ["A", "B", "F"]
    assert {x: tuple(v.shape) for x, v in feats.tokens.items()} == {"A": (24, 16, 32), "B": (24, 16, 64), "F": (24, 16, 32)}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in feats.tokens.values())
    assert len(feats.items.kinds) == len(feats.items.answers) == 24 and feats.items.images.shape == (24, 3, 32, 32)
    choice = [a for k, a in zip(feats.items.kinds, feats.items.answers) if k == "choice"]
    assert choice and all(len(a) > 1 or a.isdigit() for a in choice)  # an option's content, never its letter
    assert {"skills_s", "data_s", "read_s", "features_s"} <= set(feats.seconds)
    again = extract(spec, tmp_path / "cache", n_images=24)
    assert all(torch.allclose(feats.tokens[x], again.tokens[x], atol=1e-5) for x in feats.tokens)  # the same init
