"""The evaluation runner: batched generation, predictions files, and a 2-process gloo run whose
gathered predictions equal a 1-process run."""
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.eval.aggregate import paper_avg
from trainers.eval.runner import evaluate, to_tensor
from trainers.eval.synthetic_suite import ensure_suite
from trainers.spec import parse_trial_spec

BENCHES = ["gqa", "textvqa", "pope", "mme", "scienceqa_img", "ocrbench"]
WORDS = ["red", "2", "cat", "circle", "blue", "3", "dog"]


class PixelModel:
    """Deterministic stand-in for EagleModel.generate: the answer is a function of the image's
    pixels and the prompt's answer format, so any shard/batch mix-up changes the predictions."""

    training = False

    def __init__(self):
        self.batches = []

    def generate(self, images, prompts, max_new_tokens):
        assert images.dim() == 4 and images.shape[1] == 3 and images.dtype == torch.uint8  # floats come on the device
        self.batches.append((tuple(images.shape), len(prompts), max_new_tokens))
        out = []
        for img, p in zip(images, prompts):
            v = int(img.long().sum()) % 7
            if "yes or no" in p:
                out.append("Yes, there is." if v % 2 else "No, there is not.")
            elif "option's letter" in p:
                out.append("ABCD"[v % 4])
            else:
                out.append(WORDS[v])
        return out


def spec_for(tmp: Path, benchmarks, **eval_over):
    return parse_trial_spec({
        "experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
        "data": {"synthetic": {"seed": 1, "image_size": 32, "n_eval": 6}},
        "eval": {"benchmarks": benchmarks, "batch_size": 4, "max_new_tokens": 5, **eval_over},
        "cache_dir": str(tmp / "cache")})


def _worker(rank, world, init_file, tmp, result_dir, eval_over):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        spec = spec_for(Path(tmp), BENCHES, **eval_over)
        try:
            res = evaluate(PixelModel(), None, spec, Path(tmp) / "two", rank=rank, world_size=world)
        except RuntimeError as err:  # the test checks every rank got the same error
            res = {"error": str(err)}
        (Path(result_dir) / f"rank{rank}.json").write_text(json.dumps(res, sort_keys=True))
    finally:
        dist.destroy_process_group()


def test_to_tensor_matches_the_training_loader(tmp_path):
    from PIL import Image

    from trainers.data.images import load_image
    wide = Image.effect_noise((20, 10), 40).convert("RGB")
    wide.save(tmp_path / "w.png")
    t = to_tensor([wide, Image.new("RGB", (7, 7), (0, 0, 0))], 16)
    assert t.shape == (2, 3, 16, 16) and t.dtype == torch.uint8
    assert torch.equal(t[0], load_image(tmp_path / "w.png", 16))  # what the model saw in training
    assert float(t[1].max()) == 0.0


def test_single_process_writes_predictions_and_scores(tmp_path):
    model = PixelModel()
    res = evaluate(model, None, spec_for(tmp_path, ["gqa", "pope", "mme"]), tmp_path / "one")
    assert res["objective_name"] == "avg"
    assert set(res["scores"]) >= {"gqa", "pope", "mme", "pope/random/f1", "mme/existence/acc_plus"}
    assert res["objective"] == pytest.approx((res["scores"]["gqa"] * 10 + res["scores"]["pope"] * 10
                                               + res["scores"]["mme"] / 2) / 3)
    lines = [json.loads(l) for l in (tmp_path / "one/predictions/pope.jsonl").read_text().splitlines()]
    assert len(lines) == 18 and {"question_id", "prompt", "answer", "ground_truth", "score"} <= set(lines[0])
    assert lines[0]["prompt"].startswith("A chat between") and "<image>\nIs there a " in lines[0]["prompt"]
    # the per-line scores are the official rule: POPE accuracy = their mean
    acc = 100 * sum(l["score"] for l in lines if l["question_id"].startswith("random/")) / 6
    assert res["scores"]["pope/random/accuracy"] == pytest.approx(acc)
    assert all(n <= 4 and shape[2:] == (32, 32) and new == 5 for shape, n, new in model.batches)


def test_limit_and_errors(tmp_path):
    res = evaluate(PixelModel(), None, spec_for(tmp_path, ["gqa"], limit=2), tmp_path / "o")
    assert len((tmp_path / "o/predictions/gqa.jsonl").read_text().splitlines()) == 2
    with pytest.raises(KeyError, match="unknown benchmark 'vqa'; known: gqa"):
        evaluate(PixelModel(), None, spec_for(tmp_path, ["vqa"]), tmp_path / "o")
    with pytest.raises(Exception, match=f"gqa: missing questions file: looked for {tmp_path}/nowhere/gqa/"):
        evaluate(PixelModel(), None, spec_for(tmp_path, ["gqa"], data_root=str(tmp_path / "nowhere")), tmp_path / "o")
    assert res["scores"]["gqa"] in (0.0, 50.0, 100.0)


@pytest.mark.slow
def test_two_processes_gather_the_same_predictions_as_one(tmp_path):
    ensure_suite(tmp_path / "cache", 6, 1, 32)  # once, before the processes start
    one = evaluate(PixelModel(), None, spec_for(tmp_path, BENCHES), tmp_path / "one")
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path), str(results), {}), nprocs=2, join=True)
    r0, r1 = (json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1  # every rank gets rank 0's result
    assert r0["scores"] == pytest.approx(one["scores"]) and r0["objective"] == pytest.approx(one["objective"])
    for b in BENCHES:
        assert (tmp_path / "two/predictions" / f"{b}.jsonl").read_text() == \
            (tmp_path / "one/predictions" / f"{b}.jsonl").read_text()
    assert 0.0 < one["scores"]["pope"] < 100.0  # a non-trivial mix of right and wrong answers


def test_objective_errors_and_heldout(tmp_path):
    with pytest.raises(ValueError, match="weights name scores that were not computed: pope"):
        evaluate(PixelModel(), None, spec_for(tmp_path, ["gqa"], objective="weighted", weights={"pope": 1.0}),
                 tmp_path / "o")
    res = evaluate(PixelModel(), None, spec_for(tmp_path, ["gqa"], objective="heldout_loss"), tmp_path / "o")
    assert res["objective"] is None and res["objective_name"] == "heldout_loss"
    res = evaluate(PixelModel(), None, spec_for(tmp_path, ["gqa"], objective="gqa"), tmp_path / "o")
    assert res["objective"] == res["scores"]["gqa"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_processes_share_a_scoring_error_instead_of_hanging(tmp_path):
    ensure_suite(tmp_path / "cache", 6, 1, 32)
    results = tmp_path / "results"
    results.mkdir()
    bad = {"objective": "weighted", "weights": {"mmmu": 1.0}}  # mmmu is not evaluated
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path), str(results), bad), nprocs=2, join=True)
    errors = [json.loads((results / f"rank{r}.json").read_text())["error"] for r in (0, 1)]
    assert errors[0] == errors[1] and "objective 'weighted'" in errors[0] and "mmmu" in errors[0]


def test_final_eval_carries_intervals_and_the_blind_control(tmp_path):
    spec = spec_for(tmp_path, ["gqa", "pope", "mme"], blind=True, bootstrap={"resamples": 200, "seed": 1})
    model = PixelModel()
    res = evaluate(model, None, spec, tmp_path / "one")
    for bench in ("gqa", "pope", "mme"):
        lo, hi = res["scores_ci"][bench]
        assert lo <= res["scores"][bench] <= hi or lo == hi
        assert len(res["blind_gap_ci"][bench]) == 2
    lo, hi = res["objective_ci"]
    assert lo <= res["objective"] <= hi and lo < hi
    assert len(res["bootstrap"]["objective"]) == 200 and res["bootstrap"]["seed"] == 1
    # blank images: every item got the same pixels, so the pixel model answers every question alike
    blind = [json.loads(l) for l in (tmp_path / "one/predictions/gqa.blind.jsonl").read_text().splitlines()]
    assert len({line["answer"] for line in blind}) == 1
    assert set(res["blind_scores"]) == {"gqa", "pope", "mme"}
    assert res["blind_objective"] == pytest.approx(paper_avg(res["blind_scores"]))
    assert sum(n for _, n, _ in model.batches) == 2 * (6 + 18 + 6)  # every item twice: sighted and blind
    # an interim evaluation (pruners) does neither
    interim = evaluate(PixelModel(), None, spec, tmp_path / "two", final=False)
    assert set(interim) == {"scores", "objective", "objective_name", "scorer_profile", "items_done", "items_full",
                            "early_stopped"}
    # the same items and bootstrap seed: a second model's replicates pair with the first's
    again = evaluate(PixelModel(), None, spec, tmp_path / "three")
    assert again["bootstrap"] == res["bootstrap"]


def test_image_side_is_the_training_side_never_a_default(tmp_path):
    """Real data: images reach the model at the largest expert input size, as in training (no 336)."""
    spec = parse_trial_spec({
        "experts": [{"preset": "tiny-clip", "input_size": 192}, {"preset": "tiny-convnext"}],
        "llm": {"preset": "tiny-llama"}, "data": {"pretrain": "p.json", "sft": "s.json", "image_folder": "i"},
        "eval": {"benchmarks": ["gqa"], "limit": 2, "batch_size": 2}, "cache_dir": str(tmp_path / "cache")})
    from trainers.stages.recipes import data_image_size

    assert data_image_size(spec) == 192  # tiny-convnext: 128
    model = PixelModel()
    evaluate(model, None, spec, tmp_path / "out")
    assert {shape[2:] for shape, _, _ in model.batches} == {(192, 192)}
    bad = spec.model_copy(update={"experts": [spec.experts[0].model_copy(update={"preset": "tiny-clop"})]})
    with pytest.raises(KeyError, match="tiny-clop"):
        data_image_size(bad)


class NoWhenBlank(PixelModel):
    """Says "no" to every POPE question ("Is there ...?") about a blank image, as the tiny LLM's blind run does."""

    def generate(self, images, prompts, max_new_tokens):
        out = super().generate(images, prompts, max_new_tokens)
        return ["No." if "Is there" in p and int(img.min()) == int(img.max()) else o
                for img, p, o in zip(images, prompts, out)]


def test_a_blind_score_that_is_undefined_is_flagged_and_never_compared(tmp_path):
    spec = spec_for(tmp_path, ["gqa", "pope"], blind=True, bootstrap={"resamples": 50, "seed": 1})
    res = evaluate(NoWhenBlank(), None, spec, tmp_path / "one")
    assert res["blind_undefined"] == {"pope": "F1 undefined on 3 split(s): no yes answers (precision 0/0)"}
    assert res["blind_scores"]["pope"] == 0.0
    assert set(res["blind_gap_ci"]) == {"gqa"}  # no paired "beats blind" against an undefined F1
    assert "scores_undefined" not in res  # the sighted run says yes somewhere
