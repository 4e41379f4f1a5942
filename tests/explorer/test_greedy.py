"""Greedy round-robin selection against the paper's greedy table (scripted objective)."""
from __future__ import annotations

import statistics

import pytest
import yaml
from optuna.trial import TrialState

from explorer.controller import run_study
from explorer.study.storage import default_storage_url, open_study
from explorer.strategies.base import trial_params
from explorer.study.spec import StudyError
from explorer.study.load import parse_study
from test_study_fixtures import PAPER_AVG, PAPER_PATH, paper_runner, study_data


def _run(tmp_path, strategy, runner=paper_runner, **extra):
    spec = parse_study(study_data("greedy", strategy, **extra), "greedy.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    study = open_study(spec, default_storage_url(tmp_path))
    return spec, outcome, study.get_trials()


def test_paper_greedy_path_and_eleven_trials_in_rounds(tmp_path):
    _, outcome, trials = _run(tmp_path, {"type": "greedy", "base": ["A", "B"]},
                              resources={"max_concurrent_trials": 3})
    assert outcome.finished
    assert outcome.greedy_path == PAPER_PATH
    assert outcome.best_experts == "A+B+F+E+C" and outcome.best_value == pytest.approx(666.5)
    assert len(trials) == 11 and all(t.state == TrialState.COMPLETE for t in trials)
    # one trial per planned set, with the paper's value
    sets = [frozenset(t.user_attrs["experts"].split("+")) for t in trials]
    assert set(sets) == set(PAPER_AVG) and len(set(sets)) == 11
    for t, s in zip(trials, sets):
        assert t.value == pytest.approx(PAPER_AVG[s])
        params = trial_params(t)
        assert {k for k, v in params.items() if k.startswith("expert_") and v} == {f"expert_{x}" for x in s}
        assert (params["fusion"], params["resolution"], params["freeze"]) == ("channel_concat", "preset", "preset")
        # what the study holds fixed is a user attr, not a search dimension: only candidates vary
        assert set(t.params) == {"expert_C", "expert_D", "expert_E", "expert_F"}
        assert t.user_attrs["fixed.fusion"] == "channel_concat" and t.user_attrs["fixed.expert_A"] is True
        assert t.user_attrs["round"] == len(s) - 2 and t.user_attrs["attempt"] == 0
    rounds = {}
    for t in trials:
        rounds.setdefault(t.user_attrs["round"], []).append(t)
    assert [len(rounds[r]) for r in sorted(rounds)] == [1, 4, 3, 2, 1]
    # round 1 (base + each candidate) starts beside round 0; every later round once the previous has finished
    assert min(t.datetime_start for t in rounds[1]) < max(t.datetime_complete for t in rounds[0])
    for r in range(2, 5):
        assert min(t.datetime_start for t in rounds[r]) >= max(t.datetime_complete for t in rounds[r - 1])
        assert {t.user_attrs["candidate"] for t in rounds[r]} == {x for t in rounds[r] for x in
                                                                  t.user_attrs["experts"].split("+")} - set(
            PAPER_PATH[r - 1].split("+"))
    # the generated trial spec of the best set uses the tiny presets in the order they were added
    best = next(t for t in trials if t.user_attrs["experts"] == "A+B+F+E+C")
    spec = yaml.safe_load(open(f"{best.user_attrs['trial_dir']}/trial.yaml"))
    assert [e["preset"] for e in spec["experts"]] == ["tiny-clip", "tiny-convnext", "tiny-eva02",
                                                      "tiny-pix2struct", "tiny-sam"]
    assert spec["cache_dir"] == str(tmp_path.resolve() / "cache")
    # one directory per planned trial (its key), shared by its attempts
    assert best.user_attrs["trial_dir"] == str(tmp_path.resolve() / "trials" / "greedy" / "r3__A+B+F+E+C__s0")


def test_stop_on_first_round_without_improvement(tmp_path):
    def runner(job):  # round 2 (four experts) all worse than the best three-expert set
        s = frozenset(job.user_attrs["experts"].split("+"))
        return {"objective": PAPER_AVG[s] - (10.0 if len(s) == 4 else 0.0)}

    _, outcome, trials = _run(tmp_path, {"type": "greedy", "base": ["A", "B"], "stop_on_no_improvement": True},
                              runner=runner)
    assert len(trials) == 1 + 4 + 3
    assert outcome.finished and "no improvement" in outcome.stopped_reason
    assert outcome.best_experts == "A+B+F" and outcome.greedy_path == ["A+B", "A+B+F", "A+B+F+E"]


def test_max_size_and_candidates_limit_the_rounds(tmp_path):
    _, outcome, trials = _run(tmp_path, {"type": "greedy", "base": ["A", "B"], "candidates": ["C", "E", "F"],
                                         "max_size": 4})
    assert len(trials) == 1 + 3 + 2
    assert outcome.greedy_path == ["A+B", "A+B+F", "A+B+F+E"]


def test_seed_repeats_ranked_by_mean_with_spread(tmp_path):
    # seed 1 flips round 1: C is best on seed 1 alone, but F wins on the mean
    noise = {("A+B+C", 1): +6.0, ("A+B+F", 1): -2.0}

    def runner(job):
        key = (job.user_attrs["experts"], job.user_attrs["seed"])
        spec = yaml.safe_load(open(job.spec_path))
        assert spec["seed"] == job.user_attrs["seed"]
        return {"objective": PAPER_AVG[frozenset(key[0].split("+"))] + noise.get(key, 0.0)}

    _, outcome, trials = _run(tmp_path, {"type": "greedy", "base": ["A", "B"], "max_size": 3, "repeats": 2}, runner=runner)
    assert len(trials) == (1 + 4) * 2
    assert sorted({t.user_attrs["seed"] for t in trials}) == [0, 1]
    round1 = {c["experts"]: c for c in outcome.path[1]["candidates"]}
    assert round1["A+B+C"]["mean"] == pytest.approx(660.3 + 3.0)
    assert round1["A+B+F"]["mean"] == pytest.approx(665.3 - 1.0)
    assert round1["A+B+F"]["std"] == pytest.approx(statistics.stdev([665.3, 663.3]))
    assert outcome.best_experts == "A+B+F" and outcome.best_value == pytest.approx(664.3)


def test_rerun_of_a_finished_study_runs_nothing(tmp_path):
    calls = []

    def runner(job):
        calls.append(job.number)
        return paper_runner(job)

    _run(tmp_path, {"type": "greedy", "base": ["A", "B"]}, runner=runner)
    assert len(calls) == 11
    _, outcome, trials = _run(tmp_path, {"type": "greedy", "base": ["A", "B"]}, runner=runner)
    assert len(calls) == 11 and len(trials) == 11 and outcome.greedy_path == PAPER_PATH


def test_resume_with_a_different_strategy_is_refused(tmp_path):
    _run(tmp_path, {"type": "greedy", "base": ["A", "B"], "max_size": 3})
    spec = parse_study(study_data("greedy", {"type": "greedy", "base": ["A", "C"]}), "greedy.yaml", tmp_path)
    with pytest.raises(Exception, match="different strategy"):
        run_study(spec, default_storage_url(tmp_path), tmp_path, runner=paper_runner)


@pytest.mark.parametrize("strategy, field", [
    ({"type": "greedy", "base": ["A", "Z"]}, "strategy.base: unknown expert letter 'Z'"),
    ({"type": "greedy", "base": []}, "strategy.base: greedy needs at least one base expert"),
    ({"type": "greedy", "base": ["A", "B"], "max_size": 7}, "strategy.max_size: 7 > 6"),
    ({"type": "greedy", "base": ["A", "B"], "candidates": ["B", "C"]}, "strategy.candidates: B already"),
    ({"type": "greedy", "base": ["A", "B"], "fusion": "concat"}, "strategy.fusion: unknown fusion 'concat'"),
    ({"type": "greedy", "base": ["A", "B"], "repeats": 2, "seeds": [1]}, "strategy.seeds: 1 seeds for repeats=2"),
])
def test_impossible_greedy_options(tmp_path, strategy, field):
    with pytest.raises(StudyError, match=field.replace("+", r"\+")) as err:
        parse_study(study_data("bad", strategy), "bad.yaml", tmp_path)
    assert str(err.value).startswith("bad.yaml: ") and "\n" not in str(err.value)
