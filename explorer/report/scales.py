"""The units and scales of the paper's benchmarks, and the one number format that the terminal,
the leaderboard and exports use (the paper's: one decimal)."""
from __future__ import annotations

from typing import Any

# Benchmark keys (as trainers.eval names them, and common spellings) -> the paper's column header.
PAPER_COLUMNS: dict[str, str] = {
    "gqa": "GQA", "mme": "MME", "mmmu": "MMMU", "ocrbench": "OCR", "ocr": "OCR",
    "sqa": "SQA", "scienceqa": "SQA", "scienceqa_img": "SQA", "pope": "POPE", "textvqa": "TextVQA",
}
PAPER_ORDER = ["GQA", "MME", "MMMU", "OCR", "SQA", "POPE", "TextVQA"]
UNITS = {"GQA": "%", "MME": "pts", "MMMU": "%", "OCR": "/1000", "SQA": "%", "POPE": "F1 %", "TextVQA": "%"}
AVG_LABEL = "Avg (1000-pt)"
LEGEND = ("Avg (1000-pt): the paper's Avg, every benchmark on a 1000-point scale (% x10, MME perception / 2, "
          "OCRBench as is) and averaged. GQA, MMMU, SQA, TextVQA: accuracy %; POPE: F1 %, mean of its splits; "
          "MME: perception score (acc + acc+ summed over subtasks; 2000 max on the full benchmark); "
          "OCR: OCRBench right answers per 1000.")
TASK_AVG_LABEL = "Avg (tasks)"
TASK_LEGEND = ("Avg (tasks): the plain mean of the lmms-eval tasks' headline metrics, each in lmms-eval's units "
               "(its own scorers); columns are task names.")
DIGITS = 1
CSV_DIGITS = 2


def column(bench: str) -> str:
    return PAPER_COLUMNS.get(bench.lower(), bench)


def label(col: str) -> str:
    """A column header with its unit: "GQA (%)"; unknown columns as they are."""
    return f"{col} ({UNITS[col]})" if col in UNITS else col


def objective_label(name: str | None, harness: str | None = None) -> str:
    """The objective's header; "avg" over lmms-eval tasks is a plain mean, not the paper's Avg."""
    if name in (None, "avg"):
        return TASK_AVG_LABEL if harness == "lmms-eval" else AVG_LABEL
    return str(name)


def result_harness(result: dict[str, Any] | None) -> str | None:
    """The harness a result.json was scored by (None: the built-in scorers)."""
    harness = (result or {}).get("harness")
    return harness.get("name") if isinstance(harness, dict) else None


def digits_for(harness: str | None, csv: bool = False) -> int:
    """Decimals shown: lmms-eval's metrics are mostly fractions (0.1875), the paper's percents."""
    if harness == "lmms-eval":
        return 4
    return CSV_DIGITS if csv else DIGITS


def fmt(value: Any, digits: int = DIGITS) -> str:
    """Numbers with a fixed number of decimals (199.03 -> "199.0", never "199"); "" for None."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{float(value):.{digits}f}"


def fmt_ci(ci: Any, digits: int = DIGITS) -> str:
    """[lo, hi] as "lo–hi" (an en dash, so a negative bound stays readable); "" without an interval."""
    if not ci:
        return ""
    return f"{fmt(ci[0], digits)}\u2013{fmt(ci[1], digits)}"
