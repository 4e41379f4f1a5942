"""The study's report, rebuilt from the study database alone (so `eagle-explore report` can redo it
at any time, also after the work directory moved): the leaderboard (the cost ledger under it and in
cost.json; a multi-fidelity study's rank transfer under it too and in rank_transfer.json) and the
paper-style table (markdown and CSV), score against visual tokens with the SFT tokens/s (table and
plot), the greedy path, score-vs-cost and per-benchmark plots (PNG), the study file and its
resolved spec. Written to <workdir>/report/<study>/; explorer.tracking.tracker logs the same files
to the study's parent MLflow run."""
from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import yaml

from explorer.report import paper_table
from explorer.report import plots
from explorer.report import leaderboard as report
from explorer.report.rank_transfer import rank_transfer, summary_lines
from explorer.study.attrs import trial_scores
from explorer.study.ledger import ledger_lines, study_ledger
from explorer.redact import mask, mask_data
from explorer.tracking.run_fields import is_number
from explorer.report.scales import PAPER_COLUMNS, PAPER_ORDER
from explorer.report.tokens import token_rows, token_table
from explorer.report.trial_files import trial_result, trial_visual_tokens

logger = logging.getLogger(__name__)

LEADING = 4  # candidates in the per-benchmark bars
PLOTS = ("greedy_path.png", "pareto.png", "benchmarks.png", "visual_tokens.png")


def report_dir(workdir: str | Path, study_name: str) -> Path:
    return Path(workdir) / "report" / study_name


def rank_hours(result: dict[str, Any]) -> float | None:
    """Wall time of every stage times the ranks that ran it (GPU-hours on GPUs)."""
    secs = [v for v in (result.get("stage_time_s") or {}).values() if is_number(v)]
    if not secs or not sum(secs):
        return None
    return sum(secs) * int(result.get("world_size") or 1) / 3600.0


def study_cost(study, workdir: str | Path | None) -> dict[str, Any]:
    """The cost ledger (explorer/study/ledger.py) over every trial that wrote a result (stopped ones too)."""
    results = [trial_result(t, workdir, study.study_name) or {} for t in study.get_trials(deepcopy=False)]
    return study_ledger([r for r in results if r])


def resolved_spec(spec) -> dict[str, Any]:
    """The study as it runs: its file's settings with the base trial and search space filled in."""
    data = spec.model_dump(mode="json")
    data["base_trial"] = spec.base_trial_data
    data["search_space"] = spec.space.model_dump(mode="json")
    return mask_data(data)


def study_params(spec) -> dict[str, str]:
    """Parent-run params: the study's settings and its base trial, flattened, without None."""
    data = mask_data(spec.model_dump(mode="json"))
    data["base_trial"] = spec.base_trial_data
    if not isinstance(data.get("search_space"), str):
        data["search_space"] = "(inline)"
    out: dict[str, str] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, list):
            if value:
                out[name] = json.dumps(value)
        elif value is not None and value != {}:
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)

    walk(data, "")
    return out


# -- tables -----------------------------------------------------------------------------------
def _leaderboard_table(study) -> tuple[list[str], list[list[Any]]]:
    rows = report.leaderboard(study)
    varying = [k for k in sorted({k for r in rows for k in r.get("params", {})})
               if len({str(r["params"].get(k)) for r in rows}) > 1]
    extra = sorted({k for r in rows for k, v in r.items()
                    if k not in ("rank", "experts", "value", "params", "trials", "mlflow_run_id")
                    and (v is None or isinstance(v, (int, float, str)))})
    header = ["rank", "experts", *varying, "value", *extra, "trials", "mlflow_run_id"]
    table = [[r.get("rank"), r.get("experts"), *[r["params"].get(k) for k in varying], r.get("value"),
              *[r.get(k) for k in extra], " ".join(map(str, r.get("trials", []))), r.get("mlflow_run_id")]
             for r in rows]
    return header, table


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def _markdown(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]) + "\n"


# -- plot data --------------------------------------------------------------------------------
def _done(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]


def _candidate(experts: str, trials: list, results: dict[int, dict]) -> dict[str, Any]:
    values = [t.value for t in trials]
    row: dict[str, Any] = {"experts": experts, "value": statistics.fmean(values), "n": len(values),
                           "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    cis = [results[t.number].get("objective_ci") for t in trials]
    if all(isinstance(c, (list, tuple)) and len(c) == 2 for c in cis):
        row["lo"], row["hi"] = statistics.fmean(c[0] for c in cis), statistics.fmean(c[1] for c in cis)
    return row


def greedy_rounds(study, results: dict[int, dict]) -> list[dict[str, Any]]:
    entries = report.greedy_path(study)
    path = {p["round"]: p["experts"] for p in entries}
    answer = {p["round"] for p in entries if p["best"]}
    if not path:
        return []
    groups: dict[int, dict[str, list]] = {}
    for t in _done(study):
        if t.user_attrs.get("round") is not None:
            groups.setdefault(int(t.user_attrs["round"]), {}).setdefault(str(t.user_attrs.get("experts")), []).append(t)
    return [{"round": rnd, "best": path.get(rnd), "answer": rnd in answer,
             "candidates": [_candidate(e, ts, results) for e, ts in sorted(groups[rnd].items())]}
            for rnd in sorted(groups)]


def _label(row: dict[str, Any], varying: list[str]) -> str:
    extra = [str(row["params"].get(k)) for k in varying]
    return " ".join([row["experts"], *extra])


def write_report(study, spec, workdir: str | Path | None, out_dir: str | Path) -> list[Path]:
    """Write every report file into out_dir; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = _done(study)
    results = {t.number: trial_result(t, workdir, study.study_name) or {} for t in done}
    objective = spec.objective.metric
    maximize = spec.objective.direction == "maximize"
    files: list[Path] = []

    def text(name: str, body: str) -> None:
        (out / name).write_text(body)
        files.append(out / name)

    ledger = study_cost(study, workdir)
    transfer = rank_transfer(study)
    footer = "".join(f"\n{line}\n" for line in ledger_lines(ledger) + summary_lines(transfer))
    header, rows = _leaderboard_table(study)
    text("leaderboard.md", _markdown(header, rows) + footer)
    text("cost.json", json.dumps(ledger, indent=2))
    if transfer is not None:
        text("rank_transfer.json", json.dumps(transfer, indent=2))
    text("leaderboard.csv", _csv(header, rows))
    text("table.md", paper_table.export(study, "markdown"))
    text("table.csv", paper_table.export(study, "csv"))
    source = Path(spec.source)
    if source.is_file():  # a URL password in the study file stays out of the report
        text("study.yaml", mask(source.read_text()))
    text("study_resolved.yaml", yaml.safe_dump(resolved_spec(spec), sort_keys=False))

    title = f"{study.study_name}: {len(done)} complete trials"
    rounds = greedy_rounds(study, results)
    if rounds:
        files.append(plots.greedy_path(rounds, objective, maximize, out / "greedy_path.png", title))
    board = report.leaderboard(study)
    varying = [k for k in sorted({k for r in board for k in r["params"]})
               if len({str(r["params"].get(k)) for r in board}) > 1]
    by_number = {t.number: t for t in done}
    points = []
    for row in board:
        costs = [c for n in row["trials"] if (c := rank_hours(results.get(n, {}))) is not None]
        if costs:
            points.append({"label": _label(row, varying), "cost": statistics.fmean(costs), "value": row["value"]})
    if points:
        files.append(plots.pareto(points, objective, maximize, cost_label="rank-hours per trial (GPU-hours on GPUs)",
                                  path=out / "pareto.png", title=title))
    tokens = {t.number: trial_visual_tokens(t, workdir, study.study_name) for t in done}
    by_tokens = token_rows(board, tokens, results, varying, maximize)
    if by_tokens:
        text("visual_tokens.md", _markdown(*token_table(by_tokens)))
        text("visual_tokens.csv", _csv(*token_table(by_tokens)))
        files.append(plots.visual_tokens(by_tokens, objective, out / "visual_tokens.png",
                                         f"{study.study_name}: {objective} and throughput against visual tokens"))
    leading = []
    for row in board[:LEADING]:
        per: dict[str, list[float]] = {}
        for n in row["trials"]:
            trial = by_number.get(n)
            scores = trial_scores(trial.user_attrs) if trial else {}
            for bench, v in (scores or results.get(n, {}).get("scores") or {}).items():
                if "/" not in bench and is_number(v):  # sub-figures (pope/random/f1) stay in MLflow
                    per.setdefault(bench, []).append(v)
        leading.append({"label": _label(row, varying), "scores": {b: statistics.fmean(v) for b, v in per.items()}})
    benches = _paper_order({b for r in leading for b in r["scores"]})
    if benches:
        files.append(plots.benchmark_bars(leading, benches, out / "benchmarks.png",
                                          f"{study.study_name}: leading {len(leading)} by {objective}"))
    return files


def _paper_order(benches: set[str]) -> list[str]:
    rank = {col: i for i, col in enumerate(PAPER_ORDER)}
    return sorted(benches, key=lambda b: (rank.get(PAPER_COLUMNS.get(b.lower(), b), len(rank)), b))
