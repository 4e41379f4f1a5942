"""Score against visual tokens (token compression, SVA query grids and fusions change how many tokens
the LLM sees per image): one row per leaderboard configuration with its visual tokens (from the
trial's spec), its objective and interval, and the SFT throughput its trials measured (result.json)."""
from __future__ import annotations

import statistics
from typing import Any

from explorer.tracking.run_fields import is_number

HEADER = ["visual_tokens", "experts", "setting", "value", "lo", "hi", "n", "sft_tokens_per_s", "sft_samples_per_s"]


def sft_throughput(result: dict[str, Any]) -> dict[str, float]:
    """The SFT stage's throughput (the last stage's when there is no SFT stage), numbers only."""
    per_stage = result.get("throughput") or {}
    stage = per_stage.get("sft") or (list(per_stage.values())[-1] if per_stage else {})
    return {k: float(v) for k, v in (stage or {}).items() if is_number(v) and v > 0}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def token_rows(board: list[dict[str, Any]], tokens: dict[int, int | None], results: dict[int, dict[str, Any]],
               varying: list[str], maximize: bool = True) -> list[dict[str, Any]]:
    """board: explorer.report.leaderboard.leaderboard rows; tokens / results: by trial number. Rows whose trials
    have no known visual tokens are left out; fewest tokens first, then best value."""
    out = []
    for row in board:
        counts = {tokens.get(n) for n in row["trials"]} - {None}
        if len(counts) != 1:  # unknown, or (never within one configuration) mixed
            continue
        speed = [sft_throughput(results.get(n, {})) for n in row["trials"]]
        ci = row.get("ci")
        lo, hi = (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
        out.append({"visual_tokens": counts.pop(), "experts": row["experts"],
                    "setting": " ".join(f"{k}={row['params'].get(k)}" for k in varying if k in row["params"]),
                    "value": row["value"], "lo": lo, "hi": hi, "n": row.get("n"),
                    "sft_tokens_per_s": _mean([s["tokens_per_s"] for s in speed if "tokens_per_s" in s]),
                    "sft_samples_per_s": _mean([s["samples_per_s"] for s in speed if "samples_per_s" in s])})
    out.sort(key=lambda r: (r["visual_tokens"], -r["value"] if maximize else r["value"]))
    return out


def token_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    return HEADER, [[r[k] for k in HEADER] for r in rows]
