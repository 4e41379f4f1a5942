"""Multi-fidelity rounds (explorer/strategies/fidelity.py) with scripted trials: promotions and
stops by rung for greedy and grid, ASHA's early promotions, a kill at a rung that resumes to the
uninterrupted study, and the evaluation's early stop against the round's leader."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from fidelity_support import RungRunner, completed, stop_marks
from optuna.trial import TrialState
from test_study_fixtures import PAPER_AVG, PAPER_PATH, study_data

from explorer.controller import run_study
from explorer.report.leaderboard import status_json
from explorer.study.storage import default_storage_url, open_study
from explorer.strategies import build_strategy
from explorer.strategies.fidelity import fractions
from explorer.study.spec import FidelitySpec, StudyError
from explorer.study.load import parse_study
from trainers.eval.early_stop import EarlyStop
from trainers.stages.fidelity import stop_step


def _run(tmp_path, strategy, runner, **extra):
    spec = parse_study(study_data("fid", strategy, **extra), "fid.yaml", tmp_path)
    outcome = run_study(spec, default_storage_url(tmp_path), tmp_path, runner=runner)
    return spec, outcome, open_study(spec, default_storage_url(tmp_path))


def _by_rung(study, rnd):
    out: dict[int, set[str]] = {}
    for t in study.get_trials():
        if t.user_attrs["round"] == rnd:
            out.setdefault(t.user_attrs["rung"], set()).add(t.user_attrs["experts"])
    return out


GREEDY_SH = {"type": "greedy", "base": ["A", "B"], "fidelity": {"schedule": "successive_halving"}}


def test_fractions_and_bad_settings():
    assert fractions(FidelitySpec()) == [0.25, 0.5, 1.0]
    assert fractions(FidelitySpec(min_fraction=0.1, eta=3)) == [0.1, 0.3, 0.9, 1.0]
    assert [stop_step(f, 40) for f in (0.25, 0.5, 1.0)] == [10, 20, 40] and stop_step(0.01, 40) == 1
    bad = {**GREEDY_SH, "fidelity": {"eval_limits": [8]}}
    with pytest.raises(StudyError, match=r"^fid.yaml: strategy.fidelity.eval_limits: 1 values for 2 rungs"):
        parse_study(study_data("fid", bad), "fid.yaml")
    with pytest.raises(StudyError, match="strategy.fidelity: unknown key"):
        parse_study(study_data("fid", {"type": "tpe", "experts": ["A"], "fidelity": {}}), "fid.yaml")


def test_greedy_successive_halving_promotes_and_stops_by_rung(tmp_path):
    runner = RungRunner()
    spec, outcome, study = _run(tmp_path, GREEDY_SH, runner, resources={"max_concurrent_trials": 2})
    assert outcome.finished and outcome.greedy_path == PAPER_PATH and outcome.best_value == pytest.approx(666.5)
    # 4 candidates: 4 at 1/4, 2 at 1/2, 1 at full; a lone survivor (or a lone candidate) goes straight to the top
    assert _by_rung(study, 0) == {2: {"A+B"}}
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 1: {"A+B+C", "A+B+F"}, 2: {"A+B+F"}}
    assert _by_rung(study, 2) == {0: {"A+B+F+C", "A+B+F+D", "A+B+F+E"}, 1: {"A+B+F+C", "A+B+F+E"}, 2: {"A+B+F+E"}}
    assert _by_rung(study, 3) == {0: {"A+B+F+E+C", "A+B+F+E+D"}, 2: {"A+B+F+E+C"}}
    trials = study.get_trials()
    assert len(trials) == 18 and all(t.state == TrialState.COMPLETE for t in trials)
    assert build_strategy(spec).total_planned() == 18
    # the rungs of a planned trial share its directory (each continues the previous checkpoints)
    dirs = {key.split("@")[0]: d for key, d, _ in runner.calls}
    assert all(dirs[key.split("@")[0]] == d for key, d, _ in runner.calls)
    assert sum(f for *_, f in runner.calls) == pytest.approx(9.25)  # SFT compute of 11 full trials
    doc = status_json(study)
    stopped = {(t["experts"], t["round"]): t["stopped_at_rung"] for t in doc["trials"] if t["stopped_at_rung"] is not None}
    assert stopped == {("A+B+D", 1): 0, ("A+B+E", 1): 0, ("A+B+C", 1): 1, ("A+B+F+D", 2): 0, ("A+B+F+C", 2): 1,
                       ("A+B+F+E+D", 3): 0}
    fid = next(t["fidelity"] for t in doc["trials"] if t["rung"] == 0)
    assert fid == {"rung": 0, "fraction": 0.25, "steps_done": 10, "steps_full": 40, "stopped": True,
                   "eval_early_stopped": False, "eval_items_done": 0, "eval_items_full": 0}
    board = doc["leaderboard"]
    assert board[0]["experts"] == "A+B+F+E+C" and board[0]["best"] and not board[0]["stopped"]
    assert {r["experts"] for r in board if r["stopped"]} == {"A+B+D", "A+B+E", "A+B+C", "A+B+F+D", "A+B+F+C",
                                                             "A+B+F+E+D"}
    assert [p["experts"] for p in doc["greedy_path"]] == PAPER_PATH
    r1 = outcome.path[1]
    assert r1["rungs"][0]["A+B+D"] == pytest.approx(PAPER_AVG[frozenset("ABD")] * 0.625)
    assert {c["experts"]: c.get("stopped_rung") for c in r1["candidates"]} == {
        "A+B+C": 1, "A+B+D": 0, "A+B+E": 0, "A+B+F": None}


def test_the_low_rung_ranking_decides_who_stops(tmp_path):
    # at a quarter of the steps F looks worst: it stops there, and round 1 picks E instead
    def value(s, f):
        return PAPER_AVG[s] - (20.0 if "F" in s and f < 1 else 0.0)

    _, outcome, study = _run(tmp_path, {**GREEDY_SH, "max_size": 3}, RungRunner(value))
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 1: {"A+B+C", "A+B+E"}, 2: {"A+B+C"}}
    assert outcome.greedy_path == ["A+B", "A+B+C"]


def test_a_tie_at_the_cut_goes_on(tmp_path):
    # at 1/4 of the steps D, E and F score alike: all three go on (not two by their order)
    def value(s, f):
        if f < 0.5 and len(s) == 3:
            return 600.0 if "C" in s else 640.0
        return PAPER_AVG[s]

    _, outcome, study = _run(tmp_path, {**GREEDY_SH, "max_size": 3}, RungRunner(value))
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 1: {"A+B+D", "A+B+E", "A+B+F"},
                                  2: {"A+B+E", "A+B+F"}}
    assert outcome.greedy_path == ["A+B", "A+B+F"]


def test_grid_successive_halving(tmp_path):
    values = {"A": 600.0, "A+B": 640.0, "A+B+C": 650.0, "A+B+D": 630.0, "A+C": 610.0}
    runner = RungRunner(lambda s, f: values["+".join(sorted(s))] + 5 * f)
    strategy = {"type": "grid", "axes": {"experts": list(values)}, "fidelity": {"min_fraction": 0.5}}
    spec, outcome, study = _run(tmp_path, strategy, runner)
    rungs = Counter(t.user_attrs["rung"] for t in study.get_trials())
    assert rungs == {0: 5, 1: 3} and build_strategy(spec).total_planned() == 8  # ceil(5 / 2) go on to full steps
    assert outcome.best_experts == "A+B+C" and outcome.best_value == pytest.approx(655.0)
    top = {t.user_attrs["experts"] for t in study.get_trials() if t.user_attrs["rung"] == 1}
    assert top == {"A+B+C", "A+B", "A+B+D"}
    doc = status_json(study)
    assert sorted(t["experts"] for t in doc["trials"] if t["stopped_at_rung"] == 0) == ["A", "A+C"]


def test_asha_promotes_before_the_rung_is_complete(tmp_path):
    strategy = {**GREEDY_SH, "max_size": 3, "fidelity": {"schedule": "asha"}}
    runner = RungRunner()
    _, outcome, study = _run(tmp_path, strategy, runner)
    assert outcome.finished and outcome.greedy_path == ["A+B", "A+B+F"]
    keys = [k for k, *_ in runner.calls]
    # one worker: C and D done at 1/4, the better of the two (C) goes on before E and F start
    assert keys.index("r1/A+B+C/s0@rung1") < keys.index("r1/A+B+E/s0@rung0")
    assert _by_rung(study, 1) == {0: {"A+B+C", "A+B+D", "A+B+E", "A+B+F"}, 1: {"A+B+C", "A+B+F"}, 2: {"A+B+F"}}
    # the trials of one rung trial never ran twice
    assert max(Counter(keys).values()) == 1


def test_a_kill_at_a_rung_resumes_to_the_uninterrupted_study(tmp_path):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir(), dir_.mkdir()
    strategy = {**GREEDY_SH, "max_size": 3}
    _, ref, ref_study = _run(ref_dir, strategy, RungRunner())
    killer = RungRunner(kill_at=6)  # round 1's first rung-1 trial
    with pytest.raises(KeyboardInterrupt):
        _run(dir_, strategy, killer)
    assert killer.calls[-1][0] == "r1/A+B+C/s0@rung1"
    _, outcome, study = _run(dir_, strategy, RungRunner())
    assert outcome.greedy_path == ref.greedy_path and outcome.best_value == ref.best_value

    assert completed(study) == completed(ref_study)
    interrupted = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert [t.user_attrs["key"] for t in interrupted] == ["r1/A+B+C/s0@rung1"]
    assert stop_marks(study) == stop_marks(ref_study)


def test_a_rungs_evaluation_stops_early_when_clearly_behind_the_leader(tmp_path):
    n = 64
    items = {"C": [1.0] * n,  # the leader (it runs first)
             "D": [1.0 if i % 4 == 0 else 0.0 for i in range(n)],  # clearly worse
             "E": [0.0 if i in (3, 40) else 1.0 for i in range(n)],  # close: two items behind
             "F": [1.0] * n}
    runner = RungRunner(value=lambda s, f: 600.0 + 10 * sum(items[next(iter(s - {"A", "B"}))]) / n if len(s) > 2
                        else 600.0, items=lambda s: items[next(iter(s - {"A", "B"}))] if len(s) > 2 else [1.0] * n)
    strategy = {**GREEDY_SH, "max_size": 3,
                "fidelity": {"eta": 2, "early_stop": {"alpha": 0.05, "min_items": 16, "every": 8}}}
    _, outcome, study = _run(tmp_path, strategy, runner)
    rung0 = {t.user_attrs["experts"]: t.user_attrs["fidelity"] for t in study.get_trials()
             if t.user_attrs["round"] == 1 and t.user_attrs["rung"] == 0}
    assert rung0["A+B+D"]["eval_early_stopped"] and rung0["A+B+D"]["eval_items_done"] == 16
    assert not rung0["A+B+E"]["eval_early_stopped"] and rung0["A+B+E"]["eval_items_done"] == n
    assert not rung0["A+B+C"]["eval_early_stopped"]  # the first has no leader to compare with
    stopped = {t["experts"]: t["stopped_at_rung"] for t in status_json(study)["trials"] if t["round"] == 1}
    assert stopped["A+B+D"] == 0 and outcome.greedy_path == ["A+B", "A+B+C"]


@pytest.mark.parametrize("behind, stops", [(0.75, True), (0.03, False)])
def test_early_stop_fixture(behind, stops):
    """Clearly worse (a quarter of the items right against all) stops; two misses in 64 do not."""
    n = 64
    ref = {"b": {str(i): 1.0 for i in range(n)}}
    rng = __import__("random").Random(0)
    scores = [0.0 if rng.random() < behind else 1.0 for _ in range(n)]
    if not stops:
        scores = [0.0 if i in (5, 50) else 1.0 for i in range(n)]
    es = EarlyStop(ref, 0.05, 16, 8)
    hit = next((i for i in range(0, n, 8) if es.add("b", [str(q) for q in range(i, i + 8)], scores[i:i + 8])), None)
    assert (hit is not None) == stops
    if stops:
        assert hit == 8 and es.p_value < 0.05  # decided at the first test (16 paired items)


def test_wilcoxon_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from trainers.eval.early_stop import wilcoxon_less

    rng = __import__("numpy").random.default_rng(1)
    for _ in range(5):
        d = rng.integers(-3, 3, size=30).astype(float)
        ref = stats.wilcoxon(d, alternative="less", zero_method="zsplit", method="approx", correction=False)
        assert wilcoxon_less(d) == pytest.approx(ref.pvalue, rel=1e-9)



def test_plan_counts_the_sft_steps_each_rung_adds(tmp_path):
    from explorer.plan import plan_document, rung_costs
    from trainers.estimate.cost import Assumptions, StageEstimate

    def stage(hours, stage1=()):
        return StageEstimate(1, 1, 1.0, 1.0, hours, 8, 8, {}, [dict(e) for e in stage1])

    def stages():
        return {"align_expert": stage(2.0, [{"expert": "x", "key": "kx", "gpu_hours": 2.0}]),
                "align_projector": stage(1.0), "sft": stage(8.0)}

    study = parse_study(study_data("plan", GREEDY_SH), "plan.yaml", tmp_path)
    ts = SimpleNamespace(experts=[SimpleNamespace(preset="tiny-clip")])
    rows = [(k, ts, stages()) for k in ("r1/A+B+C/s0@rung0", "r1/A+B+D/s0@rung0", "r1/A+B+C/s0@rung1",
                                          "r1/A+B+C/s0")]
    costs = {k: {n: s.gpu_hours for n, s in st.items()} for k, _, st in rung_costs(study, rows)}
    assert costs["r1/A+B+C/s0@rung0"] == {"align_expert": 2.0, "align_projector": 1.0, "sft": 2.0}
    assert costs["r1/A+B+C/s0@rung1"] == {"align_expert": 0.0, "align_projector": 0.0, "sft": 2.0}
    assert costs["r1/A+B+C/s0"] == {"align_expert": 0.0, "align_projector": 0.0, "sft": 4.0}  # 1/2 -> all
    doc = plan_document(rung_costs(study, rows), Assumptions(gpus=1), [])
    # pre-alignment once per planned trial (the cache once per expert key), SFT once in all: 8 + 2
    assert doc["total_gpu_hours"] == {"without_cache": 2 * 3.0 + 8.0 + 2.0, "with_cache": 2.0 + 2 * 1.0 + 10.0}
    assert rung_costs(parse_study(study_data("p", {"type": "greedy"}), "p.yaml", tmp_path), rows) is rows


def test_the_terminal_and_exports_show_each_rows_rung(tmp_path):
    from rich.console import Console

    from explorer.report.paper_table import export
    from explorer.cli.terminal import leaderboard_table, status_table

    _, _, study = _run(tmp_path, {**GREEDY_SH, "max_size": 3}, RungRunner())

    def text(table):
        console = Console(width=160, record=True)
        console.print(table)
        return {line.split("│")[2].strip() if "│" in line else "": line for line in console.export_text().splitlines()}

    board = text(leaderboard_table(study))
    assert "│ full " in board["A+B+F"] and "│ full " in board["A+B"]
    assert "r1 1/2 stopped" in board["A+B+C"] and "r0 1/4 stopped" in board["A+B+D"]
    status = Console(width=200, record=True)
    status.print(status_table(status_json(study)))
    cells = [[c.strip() for c in line.split("│")] for line in status.export_text().splitlines() if "COMPLETE" in line]
    rungs = sorted(f"{c[3]} {c[7]}" for c in cells)  # experts, rung
    # every rung trial: C ran at 1/4 and 1/2 (stopped there), F at 1/4, 1/2 and in full
    assert rungs == ["A+B full", "A+B+C r0 1/4", "A+B+C r1 1/2 stopped", "A+B+D r0 1/4 stopped",
                     "A+B+E r0 1/4 stopped", "A+B+F full", "A+B+F r0 1/4", "A+B+F r1 1/2"]
    md = export(study, "markdown")
    row = next(line for line in md.splitlines() if "| A+B+D |" in line)
    assert row.endswith("| r0 1/4 stopped |") and "| Rung |" in md and "Rung: full = all the SFT steps" in md
    csv_rows = export(study, "csv").splitlines()
    assert csv_rows[0].endswith(",rung") and any(r.startswith("3,A+B+C,") and r.endswith(",r1 1/2 stopped")
                                                 for r in csv_rows)


def test_mlflow_child_runs_carry_their_rung(tmp_path):
    from mlflow.tracking import MlflowClient

    from explorer.tracking.tracker import MlflowTracker, default_artifact_root, default_tracking_uri

    spec = parse_study(study_data("fid", {**GREEDY_SH, "max_size": 3}), "fid.yaml", tmp_path)
    uri = default_tracking_uri(tmp_path)
    tracker = MlflowTracker(uri, spec.name, default_artifact_root(tmp_path), spec=spec, workdir=tmp_path,
                            report_interval_s=1e9)
    assert run_study(spec, default_storage_url(tmp_path), tmp_path, runner=RungRunner(), tracker=tracker).finished
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(spec.name).experiment_id
    runs = client.search_runs([exp], "tags.`eagle.role` = 'trial'")
    rungs = sorted(f"{r.data.tags['experts']} {r.data.tags['rung']}" for r in runs)
    assert rungs == ["A+B full", "A+B+C r0 1/4", "A+B+C r1 1/2", "A+B+D r0 1/4", "A+B+E r0 1/4", "A+B+F full",
                     "A+B+F r0 1/4", "A+B+F r1 1/2"]
