"""What a trial's MLflow run holds, from a trial directory: metric names, params, files."""
import json

import pytest

from explorer.tracking import run_fields as rf
from explorer.study.attrs import trial_label


def test_result_metrics_one_name_each_intervals_as_lo_hi_and_no_skipped_stages():
    result = {"scores": {"gqa": 64.0, "pope/random/f1": 88.123456789}, "objective": 658.3333333, "objective_name": "avg",
              "objective_ci": [650.0, 666.5], "scores_ci": {"gqa": [62.5, 65.5]}, "heldout_loss": 1.25,
              "stage_time_s": {"pretrain": 0.0, "sft": 4.0}, "steps": {"pretrain": 0, "sft": 5},
              "throughput": {"sft": {"samples_per_s": 12.0, "tokens_per_s": 600.0}, "pretrain": {"samples_per_s": 0.0}},
              "blind_scores": {"gqa": 31.0}, "world_size": 2, "strategy": "ddp", "direction": "maximize"}
    m = rf.result_metrics(result, "avg")
    assert m == {"avg": 658.333, "avg_lo": 650.0, "avg_hi": 666.5, "score/gqa": 64.0, "score/pope/random/f1": 88.1235,
                 "score/gqa_lo": 62.5, "score/gqa_hi": 65.5, "heldout_loss": 1.25, "stage_time_s/sft": 4.0,
                 "steps/sft": 5.0, "throughput/sft/samples_per_s": 12.0, "throughput/sft/tokens_per_s": 600.0,
                 "blind_scores/gqa": 31.0}
    # a loss objective is the same metric as the loss: one key, not two
    assert set(rf.result_metrics({"objective": 1.25, "heldout_loss": 1.25}, "heldout_loss")) == {"heldout_loss"}


def test_eval_lines_are_the_score_history_without_the_final_duplicate():
    rows = [{"stage": "sft", "step": 0, "loss": 2.0, "lr": 1e-3, "time": 1.7e9},
            {"stage": "eval", "tag": "sft", "step": 5, "objective": 600.0, "gqa": 50.0},
            {"stage": "eval", "tag": "sft", "step": 10, "objective": 650.0, "gqa": 60.0}]
    got = rf.step_metrics(rows, "avg", final_from_result=True)
    assert [(k, v, s) for k, v, _, s in got] == [("sft/loss", 2.0, 0), ("sft/lr", 0.001, 0), ("avg", 600.0, 5),
                                                  ("score/gqa", 50.0, 5)]
    assert got[0][2] == 1.7e12
    assert len(rf.step_metrics(rows, "avg", final_from_result=False)) == 6
    assert rf.final_eval_step(rows) == 10


def test_spec_params_by_letter_without_none():
    spec = {"name": "s-3", "cache_dir": "/abs/cache", "seed": 0,
            "experts": [{"preset": "tiny-clip", "input_size": None}, {"preset": "tiny-eva02", "grid": 4, "freeze": True}],
            "fusion": {"name": "channel_concat", "options": {}}, "llm": {"preset": "tiny-llama", "source": None},
            "eval": {"benchmarks": ["gqa", "mme"]}}
    assert rf.spec_params(spec, ["A", "F"]) == {
        "spec.seed": "0", "spec.expert.A.preset": "tiny-clip", "spec.expert.F.preset": "tiny-eva02",
        "spec.expert.F.grid": "4", "spec.expert.F.freeze": "true", "spec.fusion.name": "channel_concat",
        "spec.llm.preset": "tiny-llama", "spec.eval.benchmarks": '["gqa", "mme"]'}


@pytest.mark.parametrize("fusion,tokens", [("channel_concat", 16), ("sequence_append", 48), ("mini_gemini", 16)])
def test_visual_tokens_follow_the_fusion(fusion, tokens):
    spec = {"experts": [{"preset": "tiny-clip", "grid": 4}, {"preset": "tiny-convnext", "grid": 4},
                        {"preset": "tiny-sam", "grid": 4}], "fusion": {"name": fusion}}
    assert rf.visual_tokens(spec) == tokens


def test_visual_tokens_read_the_presets_grid():
    from experts import get_preset

    grid = get_preset("clip-l-448").grid
    assert rf.visual_tokens({"experts": [{"preset": "clip-l-448"}], "fusion": {"name": "channel_concat"}}) == grid * grid
    assert grid == 32  # the paper's 32x32 = 1024-token grid


def test_setting_params_for_compare_views():
    params = {"expert_C": False, "expert_F": True, "train.stages.sft.lr": 2e-5}
    attrs = {"experts": "A+B+F", "round": 1, "candidate": "F", "seed": 0, "key": "r1/A+B+F/s0"}
    assert rf.setting_params(params, attrs) == {
        "experts": "A+B+F", "n_experts": "3", "round": "1", "candidate": "F", "seed": "0",
        "expert.C": "false", "expert.F": "true", "train.stages.sft.lr": "2e-05"}
    assert trial_label("A+B+F+E", {"round": 2, "candidate": "E"}, 7) == "A+B+F+E · r2 · #7"
    assert trial_label("A", {"round": 0, "candidate": "fusion=llava_hr"}, 3) == "A · fusion=llava_hr · #3"


def test_each_log_once(tmp_path):
    (tmp_path / "logs").mkdir()
    for name in ("torchrun.log", "rank0.log", "rank1.log"):
        (tmp_path / "logs" / name).write_text(name)
    (tmp_path / "result.json").write_text(json.dumps({}))
    (tmp_path / "predictions").mkdir()
    files = [(p.relative_to(tmp_path).as_posix(), folder) for p, folder in rf.artifact_files(tmp_path)]
    assert files == [("result.json", None), ("logs/rank1.log", "logs"), ("logs/torchrun.log", "logs")]
    (tmp_path / "logs" / "torchrun.log").unlink()  # without torchrun's log, rank 0's is the only copy
    assert ("logs/rank0.log", "logs") in [(p.relative_to(tmp_path).as_posix(), f) for p, f in rf.artifact_files(tmp_path)]
