"""Rank transfer (explorer/report/rank_transfer.py) over scripted multi-fidelity studies: Kendall and
weighted tau of a known ranking, whether a rung alone would have chosen the top rung's leader, a
choice that loses beyond the interval, and where it shows (status JSON, report, MLflow, terminal)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fidelity_support import RungRunner
from test_study_fixtures import PAPER_AVG, study_data

from explorer.cli.terminal import leaderboard_table
from explorer.controller import run_study
from explorer.report.leaderboard import status_json
from explorer.report.rank_transfer import rank_transfer, summary_lines
from explorer.study.load import parse_study
from explorer.study.storage import default_storage_url, open_study
from trainers.stages.fidelity import read_request

GREEDY_HALF = {"type": "greedy", "base": ["A", "B"], "fidelity": {"schedule": "successive_halving",
                                                                   "min_fraction": 0.5}}


class ReplicateRunner(RungRunner):
    """Top-rung trials also carry paired bootstrap replicates: a part shared by every trial (the
    same resampled items) of sd 1 and a part of the candidate's own of sd `own`."""

    def __init__(self, value, own: float = 0.0) -> None:
        super().__init__(value)
        self.own = own

    def __call__(self, job):
        result = super().__call__(job)
        req = read_request(job.trial_dir)
        if req is None or req.final:
            shared = np.random.default_rng(0).standard_normal(200)
            own = np.random.default_rng(list(job.user_attrs["experts"].encode()))
            reps = result["objective"] + shared + self.own * own.standard_normal(200)
            result["bootstrap"] = {"objective": reps.tolist(), "items": "x", "confidence": 0.95}
        return result


def _run(tmp_path, strategy, runner, **extra):
    spec = parse_study(study_data("fid", strategy, **extra), "fid.yaml", tmp_path)
    assert run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner).finished
    return spec, open_study(spec, default_storage_url(tmp_path))


def _entries(rt):
    return {r["round"]: r["rungs"][0] for r in rt["rounds"]}


def test_a_rung_that_ranks_as_the_top_chooses_as_it(tmp_path):
    _, study = _run(tmp_path, GREEDY_HALF, RungRunner())  # half the steps scale every value alike
    rt = rank_transfer(study)
    assert rt["top_rung"] == 1 and [r["round"] for r in rt["rounds"]] == [1, 2, 3]  # round 4: one candidate
    by = _entries(rt)
    assert [(by[r]["n"], by[r]["tau"], by[r]["weighted_tau"]) for r in (1, 2, 3)] == [
        (2, 1.0, 1.0), (2, 1.0, 1.0), (1, None, None)]  # a lone survivor leaves nothing to rank
    assert all(e["same_choice"] and e["lost_beyond_interval"] is None for e in by.values())
    assert [by[r]["choice"] for r in (1, 2, 3)] == ["A+B+F", "A+B+F+E", "A+B+F+E+C"]
    (s,) = rt["rungs"]
    assert (s["rounds"], s["same_choice"], s["same_choice_share"], s["tau"], s["losses"]) == (3, 3, 1.0, 1.0, [])
    assert summary_lines(rt) == [
        "rank transfer: rung 0 (1/2 of SFT) chose as the top rung in 3 of 3 rounds (tau 1.00, weighted tau 1.00)"]
    assert status_json(study)["rank_transfer"] == rt


def test_no_rungs_no_rank_transfer(tmp_path):
    from test_study_fixtures import paper_runner

    _, study = _run(tmp_path, {"type": "greedy", "base": ["A", "B"], "max_size": 3}, paper_runner)
    assert rank_transfer(study) is None and status_json(study)["rank_transfer"] is None
    assert summary_lines(None) == []


# a grid of 8: rung 0 (half the steps) ranks A+B+C > A+B+D > A+B > A+C > the rest; the four go on,
# and at full steps A+B+D leads A+B+C: one discordant pair of six
LOW = {"A+B+C": 700.0, "A+B+D": 690.0, "A+B": 680.0, "A+C": 670.0, "A": 600.0, "B": 590.0, "C": 580.0, "A+D": 570.0}
TOP = {"A+B+C": 650.0, "A+B+D": 660.0, "A+B": 640.0, "A+C": 630.0}


def _grid_value(sign: float):
    def value(s, f):
        return sign * (LOW if f < 1 else TOP)["+".join(sorted(s))]
    return value


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_known_ranking_gives_its_taus_and_a_loss_beyond_the_interval(tmp_path, direction):
    sign = 1.0 if direction == "maximize" else -1.0
    grid = {"type": "grid", "axes": {"experts": list(LOW)}, "fidelity": {"min_fraction": 0.5}}
    _, study = _run(tmp_path, grid, ReplicateRunner(_grid_value(sign)),
                    objective={"metric": "avg", "direction": direction})
    rt = rank_transfer(study)
    (e,) = rt["rounds"][0]["rungs"]
    assert rt["rounds"][0]["top_leader"] == "A+B+D" and rt["rounds"][0]["top_n"] == 4
    assert e["n"] == 4 and e["tau"] == pytest.approx(2 / 3)
    # hyperbolic weights: the swapped pair is the leaders, so it costs more than in plain tau
    # (scipy.stats.weightedtau([4, 3, 2, 1], [3, 4, 2, 1]) = 0.52; a swap of the last two: 0.81)
    assert e["weighted_tau"] == pytest.approx(0.52)
    assert e["choice"] == "A+B+C" and not e["same_choice"] and e["reached_top"]
    assert e["lost_beyond_interval"] is True and e["diff_ci"] == pytest.approx([sign * -10.0] * 2)
    assert summary_lines(rt) == [
        "rank transfer: rung 0 (1/2 of SFT) chose as the top rung in 0 of 1 rounds (tau 0.67, weighted tau 0.52)",
        "round 0: rung 0's choice A+B+C lost to A+B+D at the top rung beyond the interval"]


def test_a_loss_within_the_interval_is_no_finding(tmp_path):
    # at half the steps C looks 20 better than it is: it leads there, and loses by 5 at full steps
    def value(s, f):
        return PAPER_AVG[s] + (20.0 if "C" in s and f < 1 else 0.0)

    for own, beyond in ((0.0, True), (20.0, False)):
        workdir = tmp_path / str(own)
        workdir.mkdir()
        _, study = _run(workdir, {**GREEDY_HALF, "max_size": 3}, ReplicateRunner(value, own))
        e = _entries(rank_transfer(study))[1]
        assert (e["choice"], e["same_choice"], e["tau"], e["lost_beyond_interval"]) == ("A+B+C", False, -1.0, beyond)
        lost = "round 1: rung 0's choice A+B+C lost to A+B+F at the top rung beyond the interval"
        assert (lost in summary_lines(rank_transfer(study))) is beyond


def test_report_mlflow_and_terminal_show_it(tmp_path):
    from mlflow.tracking import MlflowClient

    from explorer.tracking.tracker import MlflowTracker, default_artifact_root, default_tracking_uri

    grid = {"type": "grid", "axes": {"experts": list(LOW)}, "fidelity": {"min_fraction": 0.5}}
    spec = parse_study(study_data("fid", grid), "fid.yaml", tmp_path)
    uri = default_tracking_uri(tmp_path)
    tracker = MlflowTracker(uri, spec.name, default_artifact_root(tmp_path), spec=spec, workdir=tmp_path,
                            report_interval_s=1e9)
    runner = ReplicateRunner(_grid_value(1.0))
    assert run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner, tracker=tracker).finished
    study = open_study(spec, default_storage_url(tmp_path))
    tracker.on_study_end(study)  # as `eagle-explore run` does: the final report
    lines = summary_lines(rank_transfer(study))
    out = tmp_path / "report" / "fid"
    assert json.loads((out / "rank_transfer.json").read_text()) == json.loads(json.dumps(rank_transfer(study)))
    board = (out / "leaderboard.md").read_text()
    assert all(f"\n{line}\n" in board for line in lines) and board.index("cost:") < board.index(lines[0])
    client = MlflowClient(uri)
    metrics = client.get_run(status_json(study)["mlflow_parent_run_id"]).data.metrics
    assert metrics["rank_transfer/rung0/tau"] == pytest.approx(2 / 3)
    assert metrics["rank_transfer/rung0/weighted_tau"] == pytest.approx(0.52)
    assert metrics["rank_transfer/rung0/same_choice_share"] == 0.0
    assert str(leaderboard_table(study).caption).splitlines()[-2:] == lines
