"""The scorer agreement report (benchmarks/lmms_agreement.py): on the panel's answers, the project's
"lmms_eval" profile gives the per-item score lmms-eval's own task code gives, on all seven
benchmarks, except where an MMMU answer names no option and both guess; the committed results file
is what the script writes."""
import json
import subprocess
from pathlib import Path

from benchmarks.lmms_agreement_panel import TASKS, panel, to_item
from tests.trainers.lmms_local_task import lmms_python
from trainers.eval.benchmarks import get_benchmark

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "lmms_agreement.json"


def test_panel_builds_items_every_scorer_reads():
    for bench in TASKS:
        scorer = get_benchmark(bench, profile="lmms_eval")
        pairs = panel(bench)
        assert len(pairs) >= 3, bench
        for n, (doc, answers) in enumerate(pairs):
            item = to_item(bench, n, doc)
            scores = [scorer.score_item(item, a) for a in answers]
            assert max(scores) == 1.0 and min(scores) == 0.0, (bench, n, scores)  # answers that vary the score


def test_agreement_report_matches_lmms_eval(tmp_path):
    out = tmp_path / "agreement.json"
    proc = subprocess.run([lmms_python(), "-m", "benchmarks.lmms_agreement", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(out.read_text())
    assert set(fresh["benchmarks"]) == set(TASKS)
    assert fresh["answers"] == sum(len(a) for b in TASKS for _, a in panel(b))
    assert fresh["rule_disagreements"] == 0, [r["disagreements"] for r in fresh["benchmarks"].values()]
    for bench, row in fresh["benchmarks"].items():
        assert row["agree"] + len(row["disagreements"]) == row["answers"]
        if not row["disagreements"]:
            assert row["headline_equal"], (bench, row["headline"])
    assert json.loads(RESULTS.read_text()) == fresh  # the committed figures are the script's
