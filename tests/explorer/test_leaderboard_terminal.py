"""The leaderboard in an 80-column terminal: the resolution ablation's varying settings stay whole,
constant ones move to the header line, numbers have one decimal and a labelled scale."""
from __future__ import annotations

import zlib

from rich.console import Console

from explorer.report import leaderboard as report
from explorer.controller import run_study
from explorer.study.storage import default_storage_url, open_study
from explorer.study.load import parse_study
from explorer.cli.terminal import leaderboard_table
from test_study_fixtures import study_data

AXES = {"resolution": ["original", "interpolate_448", "interpolate_672", "tiled_672"],
        "freeze": ["frozen", "unfreeze"], "train.recipe": ["baseline"]}


def _runner(job):
    value = 600.0 + zlib.crc32(job.user_attrs["key"].encode()) % 400 / 10  # distinct, 1 decimal
    return {"objective": value, "objective_name": "avg", "scores": {"gqa": value / 10}}


def test_resolution_ablation_reads_at_80_columns(tmp_path):
    spec = parse_study(study_data("res", {"type": "grid", "experts": ["A"], "axes": AXES},
                                  resources={"max_concurrent_trials": 4}), "res.yaml", tmp_path)
    run_study(spec, default_storage_url(tmp_path), tmp_path, runner=_runner)
    study = open_study(spec, default_storage_url(tmp_path))
    console = Console(width=80, record=True)
    console.print(leaderboard_table(study))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = report.leaderboard(study)
    for row in rows:  # every row's varying settings and value on one line, none cut
        res, frz = row["params"]["resolution"], row["params"]["freeze"]
        assert any(f" {res} " in line and f" {frz} " in line and f"{row['value']:.1f}" in line for line in lines), res
    assert "experts A" in text and "recipe baseline" in text and "fusion channel_concat" in text
    head = next(line for line in lines if "resolution" in line)
    assert "experts" not in head and "round" not in head  # constant: in the caption, not columns
    assert "(1000-pt)" in text
    doc = report.status_json(study)  # the same statistics: one seed has no spread, not 0.0
    assert all(r["std"] is None and r["n"] == 1 for r in doc["leaderboard"])
