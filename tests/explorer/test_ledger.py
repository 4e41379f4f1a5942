"""The study cost ledger: its sums on hand-made results, and the report showing it."""
import json

import pytest

from explorer.study.ledger import ledger_lines, ledger_metrics, study_ledger, trial_ledger
from test_report_support import scripted_study, study_spec


def cost(stage1=10.0, stage2=4.0, sft=20.0, evals=2.0, s1_saved=0.0, fc_saved=0.0, unknown=0, unit="gpu_s"):
    process = {"align_expert": stage1, "align_projector": stage2, "sft": sft, "eval": evals}
    return {"unit": unit, "process_s": process, "total_process_s": sum(process.values()),
            "flops": {"feature_cache_saved": int(fc_saved * 1e12)},
            "saved": {"stage1_cache": {"process_s": s1_saved, "hits": 1 if s1_saved else 0, "unknown": unknown},
                      "feature_cache": {"process_s": fc_saved, "forwards": int(fc_saved * 10), "hits": 1}}}


def test_a_full_fidelity_trial_saves_only_what_its_caches_saved():
    row = trial_ledger({"cost": cost(stage1=0.0, s1_saved=10.0, fc_saved=3.0)})
    assert row["total_s"] == 26.0 and row["naive_s"] == 39.0
    assert row["saved_s"] == {"stage1_cache": 10.0, "feature_cache": 3.0, "eval_early_stop": 0.0, "stopped_rungs": 0.0}


def test_a_stopped_rung_and_an_early_stopped_eval_save_the_rest_at_the_measured_rate():
    stopped = {"cost": cost(), "fidelity": {"rung": 0, "fraction": 0.25, "steps_done": 25, "steps_full": 100,
                                            "stopped": True, "eval_early_stopped": True, "eval_items_done": 40,
                                            "eval_items_full": 200}}
    row = trial_ledger(stopped)
    assert row["saved_s"]["stopped_rungs"] == pytest.approx(60.0)  # 20 s for 25 steps -> 75 more steps
    assert row["saved_s"]["eval_early_stop"] == pytest.approx(8.0)  # 2 s for 40 items -> 160 more
    slim = dict(stopped, fidelity={**stopped["fidelity"], "eval_early_stopped": False})
    assert trial_ledger(slim)["saved_s"]["stopped_rungs"] == pytest.approx(68.0)  # the rung's slimmer eval
    full = dict(stopped, fidelity={**stopped["fidelity"], "steps_done": 100, "eval_items_done": 200})
    assert sum(trial_ledger(full)["saved_s"].values()) == 0.0


def test_the_study_sums_over_trials_and_counts_results_without_a_cost():
    results = [{"cost": cost()},  # made both stage-1 entries
               {"cost": cost(stage1=0.0, s1_saved=10.0, fc_saved=2.0, unknown=1)},
               {"cost": cost(stage1=0.0, s1_saved=10.0), "fidelity": {"steps_done": 50, "steps_full": 100}},
               {"scores": {}}]  # a trial from before the ledger
    led = study_ledger(results)
    assert (led["trials"], led["recorded"], led["unit"]) == (4, 3, "gpu_s")
    assert led["total_s"] == 36.0 + 26.0 + 26.0
    assert led["saved_s"] == {"stage1_cache": 20.0, "feature_cache": 2.0, "eval_early_stop": 0.0,
                              "stopped_rungs": 20.0}
    assert led["naive_s"] == led["total_s"] + 42.0 and led["ratio"] == pytest.approx(88.0 / 130.0)
    assert led["stage1_unknown"] == 1 and led["feature_forwards_saved"] == 20 and led["flops_saved"] == 2 * 10**12
    lines = ledger_lines(led)
    assert lines[0] == "cost: 88.0 s GPU time over 3 of 4 trials (naive: 130.0 s, 0.677 of it)"
    assert lines[1] == ("saved: stage-1 cache 20.0 s, feature cache 2.0 s, early-stopped evals 0.0 s, "
                        "stopped rungs 20.0 s")
    assert "1 stage-1 cache hits on entries that recorded no cost" in lines[-1]
    assert ledger_metrics(led)["cost_saved_stage1_cache_s"] == 20.0 and ledger_metrics(led)["cost_naive_s"] == 130.0
    mixed = study_ledger([{"cost": cost()}, {"cost": cost(unit="process_s")}])
    assert mixed["unit"] == "process_s (mixed devices)"
    assert study_ledger([])["ratio"] is None and "naive: 0.0 s)" in ledger_lines(study_ledger([]))[0]


def test_the_report_shows_the_ledger_under_the_leaderboard(tmp_path):
    from explorer.report.artifacts import write_report

    study = scripted_study(None, tmp_path)  # in-memory storage
    for t in study.trials:  # the scripted trials' own cost record (test_report_support.write_trial_dir)
        assert json.loads((tmp_path / "trials" / f"{t.number:04d}" / "result.json").read_text())["cost"]
    write_report(study, study_spec("paper-greedy", tmp_path), tmp_path, tmp_path / "out")
    led = json.loads((tmp_path / "out" / "cost.json").read_text())
    assert (led["trials"], led["recorded"]) == (11, 11)
    assert led["total_s"] == pytest.approx(6.0 + 11 * 14.0) and led["naive_s"] == pytest.approx(led["total_s"] + 60.0)
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert board.rstrip().endswith("stopped rungs 0.0 s") and "\ncost: 160.0 s GPU time over 11 of 11 trials (naive: 220.0 s, 0.727 of it)" in board
