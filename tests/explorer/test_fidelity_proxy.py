"""Proxy rungs (strategy.fidelity.proxy): the rungs below the top train a cheaper stand-in of the
trial (another LLM, a share of the data) in a directory of their own, continuing one another; the
top rung trains the real trial from the start, so the answer is the real trial. plan prices each
rung with its own model and data; a proxy that does not fit is one line at pre-flight."""
from __future__ import annotations

import pytest
import yaml
from fidelity_support import RungRunner
from test_fidelity import GREEDY_SH, _run
from test_study_fixtures import BASE_TRIAL, PAPER_PATH, study_data

from explorer.study.load import parse_study
from explorer.study.spec import StudyError

PROXY = {"llm": {"preset": "micro-llama", "template": "plain"}, "data_fraction": 0.5, "data_seed": 3}
GREEDY_PROXY = {**GREEDY_SH, "fidelity": {"schedule": "successive_halving", "proxy": PROXY}}


class SpecRunner(RungRunner):
    """Records, per call, the directory and the trial spec's LLM and data share."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[tuple[str, str, int, str, float]] = []

    def __call__(self, job):
        ts = yaml.safe_load(job.spec_path.read_text())
        data = ts["data"]
        self.seen.append((job.user_attrs["key"], job.trial_dir.name, int(job.user_attrs["rung"]), ts["llm"]["preset"],
                          data.get("fraction", 1.0), data.get("fraction_seed", 0)))
        return super().__call__(job)


def test_proxy_rungs_train_the_stand_in_apart_and_the_top_rung_the_trial(tmp_path):
    runner = SpecRunner()
    _, outcome, study = _run(tmp_path, GREEDY_PROXY, runner)
    assert outcome.finished and outcome.greedy_path == PAPER_PATH
    lower = [s for s in runner.seen if s[2] < 2]
    top = [s for s in runner.seen if s[2] == 2]
    assert lower and all(d.endswith("__proxy") and llm == "micro-llama" and (f, seed) == (0.5, 3)
                         for _, d, _, llm, f, seed in lower)
    assert top and all(not d.endswith("__proxy") and llm == BASE_TRIAL["llm"]["preset"] and f == 1.0
                       for _, d, _, llm, f, _ in top)
    # rung 1 continued rung 0 in the proxy directory; the top rung began at step 0 in its own
    # (RungRunner fails a launch whose directory is past its rung)
    assert {t.user_attrs["trial_dir"].rsplit("/", 1)[-1] for t in study.get_trials()} == {d for _, d, *_ in runner.seen}


def test_plan_prices_each_rung_with_its_own_model_and_data(tmp_path):
    from explorer.plan import planned_trials, rung_costs
    from trainers.estimate.cost import Assumptions, TrialEstimator

    base = {**BASE_TRIAL, "data": {"synthetic": {"n_pretrain": 64, "n_sft": 64, "n_heldout": 8, "n_eval": 8}}}
    study = parse_study(study_data("plan", {**GREEDY_PROXY, "max_size": 3}, base_trial=base), "plan.yaml", tmp_path)
    rows = rung_costs(study, planned_trials(study, TrialEstimator(Assumptions())))
    by_key = {k: (ts, st) for k, ts, st in rows}
    low_ts, low = by_key["r1/A+B+C/s0@rung0"]
    top_ts, top = next(by_key[k] for k in by_key if "@" not in k and k.startswith("r1/"))
    assert low_ts.llm.preset == "micro-llama" and low_ts.data.fraction == 0.5
    assert top_ts.llm.preset == BASE_TRIAL["llm"]["preset"] and top_ts.data.fraction == 1.0
    assert low["sft"].samples < top["sft"].samples and low["sft"].trainable_params < top["sft"].trainable_params
    assert top["align_projector"].gpu_hours == pytest.approx(
        TrialEstimator(Assumptions()).trial(top_ts)["align_projector"].gpu_hours)  # the top rung pays its own
    mid = by_key["r1/A+B+C/s0@rung1"][1] if "r1/A+B+C/s0@rung1" in by_key else None
    if mid is not None:  # rung 1 continues rung 0's proxy: no second pre-alignment
        assert mid["align_projector"].gpu_hours == 0.0


@pytest.mark.parametrize("proxy, expected", [
    ({"llm": {"preset": "micro-llama", "template": "klingon"}}, "fid.yaml: strategy.fidelity.proxy: llm.template"),
    ({"data_fraction": 1.0}, "strategy.fidelity.proxy: Value error, a proxy needs an llm or a data_fraction below 1"),
    ({"data_fraction": 0}, "strategy.fidelity.proxy.data_fraction: Input should be greater than 0"),
])
def test_a_proxy_that_does_not_fit_is_one_line(tmp_path, proxy, expected):
    bad = {**GREEDY_SH, "fidelity": {"schedule": "successive_halving", "proxy": proxy}}
    with pytest.raises(StudyError) as err:
        parse_study(study_data("fid", bad), "fid.yaml", tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_an_unknown_proxy_llm_is_one_line_at_pre_flight(tmp_path):
    from explorer.preflight import PreflightError, check_study_trials

    bad = {**GREEDY_SH, "fidelity": {"schedule": "successive_halving", "proxy": {"llm": {"preset": "nano-llama"}}}}
    spec = parse_study(study_data("fid", bad), "fid.yaml", tmp_path)
    with pytest.raises(PreflightError) as err:
        check_study_trials(spec)
    msg = str(err.value)
    assert msg.startswith("fid.yaml: strategy.fidelity.proxy (as trial r1/A+B+C/s0@rung0): ") and "nano-llama" in msg
    assert "\n" not in msg


@pytest.mark.slow
def test_real_proxy_rungs_then_the_real_trial(tmp_path):
    """Two real tiny candidates screened by a micro-LLM on half the data; the one that goes on
    trains as the real trial (tiny-llama, all the data) in its own directory."""
    import json
    from pathlib import Path

    from explorer.controller import run_study
    from explorer.study.storage import default_storage_url

    root = Path(__file__).resolve().parents[2]
    base = yaml.safe_load((root / "studies" / "trials" / "tiny.yaml").read_text())
    base["data"]["synthetic"].update(n_pretrain=32, n_sft=32, n_heldout=8)
    for stage in base["train"]["stages"].values():
        stage.update(epochs=1)
    proxy = {"llm": {"preset": "micro-llama", "template": "vicuna_v1", "max_length": 256}, "data_fraction": 0.5}
    data = {"name": "proxy", "search_space": "eagle_tiny", "base_trial": base, "poll_interval_s": 0.2,
            "strategy": {"type": "grid", "experts": ["A", "B"], "axes": {"fusion": ["channel_concat", "sequence_append"]},
                         "fidelity": {"min_fraction": 0.5, "proxy": proxy}},
            "objective": {"metric": "heldout_loss", "direction": "minimize"}}
    spec = parse_study(data, "proxy.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path)
    assert outcome.finished, outcome
    dirs = sorted((tmp_path / "trials" / "proxy").iterdir())
    proxies = [d for d in dirs if d.name.endswith("__proxy")]
    real = [d for d in dirs if not d.name.endswith("__proxy")]
    assert len(proxies) == 2 and len(real) == 1
    for d in proxies:
        ts, result = yaml.safe_load((d / "trial.yaml").read_text()), json.loads((d / "result.json").read_text())
        assert ts["llm"]["preset"] == "micro-llama" and ts["data"]["fraction"] == 0.5
        assert result["fidelity"]["rung"] == 0 and result["steps"]["sft"] == 1  # 16 records, batch 8: 2 steps, half
    ts, result = yaml.safe_load((real[0] / "trial.yaml").read_text()), json.loads((real[0] / "result.json").read_text())
    assert ts["llm"]["preset"] == "tiny-llama" and ts["data"].get("fraction", 1.0) == 1.0
    assert result["steps"]["sft"] == 4 and result["resumed_from"].get("sft", 0) == 0  # the whole trial, from scratch
    assert outcome.best_value == pytest.approx(result["heldout_loss"])
