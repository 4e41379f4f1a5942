"""A study's expected answer (the study file's `expect:` block), written before any run: recorded
in the study when it is created, refused when a resumed study's file changes it, and compared with
the outcome by the status document, the report and benchmarks/testbed.py. A mismatch is reported,
never fitted: the expectation is not edited after a run."""
from __future__ import annotations

from typing import Any

from explorer.study.handle import StoredStudy

EXPECT_ATTR = "eagle:expect"  # study system attr: the expectation the study was created with
FINISHED_ATTR = "eagle:finished"  # study system attr: the strategy had nothing left to run


def mixture(experts: list[str] | str) -> frozenset[str]:
    """A mixture as a set of expert names ("A+B+E" or [A, B, E]); order does not count."""
    return frozenset(experts.split("+") if isinstance(experts, str) else experts)


def _label(experts) -> str:
    return "+".join(sorted(mixture(experts)))


def compare(expect: dict[str, Any] | None, best: str | None, path: list[dict[str, Any]], finished: bool) -> dict | None:
    """The outcome against the expectation: the selected mixture, and where expected the selection
    path (the base, then the leader of each round that improved) and the number of greedy rounds
    run after the base; `met` is None until the study has finished, then True or False."""
    if not expect:
        return None
    leaders = [p["experts"] for p in path if p.get("round") == 0 or p.get("improved")]
    out: dict[str, Any] = {"answer": _label(expect["answer"]), "selected": None if best is None else _label(best),
                           "answer_met": None, "path": None, "path_met": None, "rounds": expect.get("rounds"),
                           "rounds_run": max((p.get("round", 0) for p in path), default=None), "rounds_met": None,
                           "met": None}
    if expect.get("path"):
        out["path"] = [_label(p) for p in expect["path"]]
        out["leaders"] = [_label(p) for p in leaders]
    if finished and best is not None:
        out["answer_met"] = mixture(best) == mixture(expect["answer"])
        if out["path"] is not None:
            out["path_met"] = out["leaders"] == out["path"]
        if out["rounds"] is not None:
            out["rounds_met"] = out["rounds_run"] == out["rounds"]
        out["met"] = out["answer_met"] and out["path_met"] is not False and out["rounds_met"] is not False
    return out


def summary_line(result: dict | None) -> str | None:
    """One line for the terminal and the report: expected, selected, met or MISSED."""
    if result is None:
        return None
    if result["met"] is None:
        return f"expected answer {result['answer']}: the study has not finished"
    path = "" if result["path"] is None else (
        f"; expected path {' -> '.join(result['path'])}, took {' -> '.join(result['leaders'])}")
    if result.get("rounds") is not None:
        path += f"; expected {result['rounds']} round(s) after the base, ran {result['rounds_run']}"
    verdict = "met" if result["met"] else "MISSED (a finding: the expectation stays as written)"
    return f"expected answer {result['answer']}, selected {result['selected']}{path}: {verdict}"


def study_expectation(study, best: str | None, path: list[dict[str, Any]]) -> dict | None:
    """compare() for a stored study: its recorded expectation and whether it has finished."""
    attrs = StoredStudy.of(study).system_attrs()
    return compare(attrs.get(EXPECT_ATTR), best, path, bool(attrs.get(FINISHED_ATTR)))
