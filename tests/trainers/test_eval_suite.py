"""The synthetic suite round-trips through the real loaders and scorers, with the SFT phrasing."""
import json
import random

import pytest

from trainers.data.prompts import SHORT_ANSWER_SUFFIX
from trainers.data.synthetic import make_item
from trainers.eval import get_benchmark, slim_subset
from trainers.eval.base import BenchmarkDataError
from trainers.eval.synthetic_suite import SYNTHETIC_BENCHMARKS, ensure_suite, write_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_suite(tmp_path_factory.mktemp("suite"), n_per_bench=8, seed=3, image_size=32)


@pytest.mark.parametrize("profile", ["official", "lmms_eval"])
@pytest.mark.parametrize("name", SYNTHETIC_BENCHMARKS)
def test_suite_round_trips(suite, name, profile):
    bench = get_benchmark(name, profile)
    items = bench.load(suite / name)
    expected = {"pope": 24, "mme": 6}.get(name, 8)  # POPE: 8 per split; MME: 3 subtasks x 1 image x 2
    assert len(items) == expected and len({i.qid for i in items}) == expected
    img = items[0].load_image()
    assert img.size == (32, 32) and img.mode == "RGB"
    # the ground truth, given as the answer, scores full marks under either profile's rules
    truths = {"textvqa": lambda i: i.answer[0], "ocrbench": lambda i: i.answer[0]}.get(name, lambda i: i.answer)
    out = bench.summarize(items, [truths(i) for i in items])
    full = {"mme": 600.0, "ocrbench": 1000.0}.get(name, 100.0)
    assert out[name] == pytest.approx(full)
    # and a constant wrong answer does not
    assert bench.summarize(items, ["zzz"] * len(items))[name] < full


def test_suite_prompts_match_sft_phrasing(suite):
    gqa = get_benchmark("gqa").load(suite / "gqa")
    assert all(i.prompt.endswith("\n" + SHORT_ANSWER_SUFFIX) for i in gqa)
    assert gqa[0].prompt == "What is the colour of the shape?\n" + SHORT_ANSWER_SUFFIX
    pope = get_benchmark("pope").load(suite / "pope")
    assert all(i.prompt.startswith("Is there a ") and i.prompt.endswith("?\n" + SHORT_ANSWER_SUFFIX) for i in pope)
    assert {i.answer for i in pope} == {"yes", "no"}
    mme = get_benchmark("mme").load(suite / "mme")
    assert [i.answer for i in mme[:2]] == ["yes", "no"]
    # MME files carry MME's " Please answer yes or no."; the loader gives LLaVA-1.5's MME prompt
    assert mme[0].prompt.startswith("Is there a ") and mme[0].prompt.endswith("?\n" + SHORT_ANSWER_SUFFIX)
    # ScienceQA prompts are rebuilt from problems.json exactly as make_item phrased them
    mmmu = get_benchmark("mmmu").load(suite / "mmmu")
    assert [i.meta["type"] for i in mmmu[:2]] == ["multiple-choice", "open"]
    assert mmmu[1].prompt == "What number is written in the image?\n" + SHORT_ANSWER_SUFFIX
    sqa = get_benchmark("scienceqa_img").load(suite / "scienceqa_img")
    rng = random.Random("eagle-eval-suite:scienceqa_img:3")
    first = make_item(rng, "choice", 32)
    assert sqa[0].prompt == first.question and sqa[0].answer == first.answer


def test_suite_is_deterministic(tmp_path, suite):
    again = write_suite(tmp_path / "again", n_per_bench=8, seed=3, image_size=32)
    for rel in ("gqa/testdev_balanced_questions.json", "pope/coco_pope_random.json",
                "scienceqa_img/problems.json", "mme/existence/syn00000.txt"):
        assert (again / rel).read_text() == (suite / rel).read_text()
    other = write_suite(tmp_path / "other", n_per_bench=8, seed=4, image_size=32, benchmarks=["gqa"])
    assert (other / "gqa/testdev_balanced_questions.json").read_text() != \
        (suite / "gqa/testdev_balanced_questions.json").read_text()


def test_ensure_suite_caches(tmp_path):
    a = ensure_suite(tmp_path, 2, 0, 32)
    stamp = (a / "gqa/testdev_balanced_questions.json").stat().st_mtime_ns
    assert ensure_suite(tmp_path, 2, 0, 32) == a
    assert (a / "gqa/testdev_balanced_questions.json").stat().st_mtime_ns == stamp
    assert json.loads((a / "suite.json").read_text())["n_per_bench"] == 2


def test_suite_rejects_benchmarks_it_lacks(tmp_path):
    with pytest.raises(BenchmarkDataError, match="synthetic suite has no vqav2; it has gqa"):
        write_suite(tmp_path, 2, 0, 32, benchmarks=["vqav2"])


def test_slim_subset_is_stable_and_keeps_mme_pairs(suite):
    pope = get_benchmark("pope")
    items = pope.load(suite / "pope")
    a = slim_subset(pope, items, 5, seed=0)
    assert len(a) == 5 and [i.qid for i in a] == [i.qid for i in slim_subset(pope, items, 5, seed=0)]
    assert [i.qid for i in a] != [i.qid for i in slim_subset(pope, items, 5, seed=1)]
    mme = get_benchmark("mme")
    pairs = slim_subset(mme, mme.load(suite / "mme"), 3, seed=0)
    assert len(pairs) == 4  # whole image pairs: 3 rounds up to 2 images
    assert len({mme.group_key(i) for i in pairs}) == 2


@pytest.mark.parametrize("name", SYNTHETIC_BENCHMARKS)
def test_answers_need_the_image(tmp_path_factory, name):
    """A text-only answerer (the most common answer of each question stem in another draw of the
    suite, else the most common answer overall) scores well below full marks: every benchmark
    needs what the image shows."""
    bench = get_benchmark(name)

    def draw(seed):
        root = write_suite(tmp_path_factory.mktemp("need"), n_per_bench=96, seed=seed, image_size=32, benchmarks=[name])
        items = bench.load(root / name)
        return items, [i.answer[0] if isinstance(i.answer, list) else i.answer for i in items]

    def stem(item):
        return item.prompt.split("\n", 1)[0]

    (fit, fit_truth), (items, truth) = draw(5), draw(6)
    by_stem = {}
    for item, t in zip(fit, fit_truth):
        by_stem.setdefault(stem(item), []).append(t)
    overall = max(set(fit_truth), key=fit_truth.count)
    blind = [max(set(by_stem[stem(i)]), key=by_stem[stem(i)].count) if stem(i) in by_stem else overall for i in items]
    key = "pope/random/accuracy" if name == "pope" else name  # POPE's F1 rewards "yes" to everything
    full = bench.summarize(items, truth)[key]
    assert bench.summarize(items, blind)[key] <= 0.6 * full
