"""Reports from a scripted study with the paper's greedy figures."""
import csv
import io
import json

import pytest
from test_report_support import PAPER_GREEDY, scripted_study

from explorer.report import paper_table
from explorer.report import leaderboard as report
@pytest.fixture(scope="module")
def paper_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("report")
    return scripted_study(f"sqlite:///{work / 'study.db'}", work)


def test_status_json_lists_every_trial(paper_study):
    doc = json.loads(json.dumps(report.status_json(paper_study)))
    assert doc["n_trials"] == 11 and doc["states"] == {"COMPLETE": 11}
    first = doc["trials"][0]
    assert first["number"] == 0 and first["state"] == "COMPLETE" and first["experts"] == "A+B"
    assert first["params"]["expert_A"] is True and first["params"]["expert_C"] is False
    assert first["value"] == pytest.approx(658.3) and first["round"] == 0 and first["candidate"] == "base"
    assert "mlflow_run_id" in first
    assert doc["best"] == {"number": 8, "value": pytest.approx(666.5), "experts": "A+B+F+E+C"}


def test_greedy_path_is_the_papers(paper_study):
    path = report.greedy_path(paper_study)
    assert [p["experts"] for p in path] == ["A+B", "A+B+F", "A+B+F+E", "A+B+F+E+C", "A+B+F+E+C+D"]
    assert [p["value"] for p in path] == pytest.approx([658.3, 665.3, 666.1, 666.5, 656.3])
    assert [p["best"] for p in path] == [False, False, False, True, False]


def test_leaderboard_sorted_by_objective(paper_study):
    rows = report.leaderboard(paper_study)
    values = [r["value"] for r in rows]
    assert values == sorted(values, reverse=True) and len(rows) == 11
    assert rows[0]["experts"] == "A+B+F+E+C" and rows[0]["rank"] == 1
    assert rows[-1]["experts"] == "A+B+D" and rows[-1]["value"] == pytest.approx(653.6)


def test_export_markdown_is_the_papers_table(paper_study):
    text = paper_table.export(paper_study, "markdown")
    lines = text.splitlines()
    # units and the Avg's scale in the header, one decimal everywhere (1504 is "1504.0", not "1504")
    assert lines[0] == ("| #Enc | Combination | GQA (%) | MME (pts) | MMMU (%) | OCR (/1000) | SQA (%) | POPE (F1 %) "
                        "| TextVQA (%) | Avg (1000-pt) |")
    assert lines[2] == "| 2 | A+B | 64.0 | 1486.0 | 36.0 | 533.0 | 72.7 | 88.6 | 71.9 | 658.3 |"
    assert lines[12] == "| 6 | A+B+F+E+C+D | 65.2 | 1504.0 | 35.3 | 534.0 | 71.9 | 87.6 | 70.9 | 656.3 |"
    assert "Avg (1000-pt): the paper's Avg, every benchmark on a 1000-point scale" in text
    assert "Greedy path: A+B (658.3) -> A+B+F (665.3) -> A+B+F+E (666.1) -> A+B+F+E+C (666.5) *best*" in text
    assert "Blind control" not in text  # these trials ran none


def test_export_csv_round_trips_numbers(paper_study):
    rows = list(csv.DictReader(io.StringIO(paper_table.export(paper_study, "csv"))))
    assert len(rows) == 11
    by = {r["Combination"]: r for r in rows}
    for combo, (scores, avg) in PAPER_GREEDY.items():
        assert float(by[combo]["Avg (1000-pt)"]) == pytest.approx(avg)
        assert float(by[combo]["OCR (/1000)"]) == pytest.approx(scores[3])
        assert by[combo]["Avg (1000-pt) lo"] == "" and by[combo]["seeds"] == "1" and by[combo]["seed sd"] == ""
        assert int(by[combo]["#Enc"]) == len(combo.split("+"))


def test_export_unknown_format_names_the_known_ones(paper_study):
    with pytest.raises(paper_table.ReportError, match="unknown export format 'html'; known: markdown, csv"):
        paper_table.export(paper_study, "html")
