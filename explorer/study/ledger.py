"""A study's cost ledger, summed from its trials' result.json: what the study spent (process-seconds:
wall time x ranks, GPU-seconds on GPUs), what each saving mechanism saved, and the naive
counterfactual (every trial pre-aligning its own experts at full fidelity, no caches), which is the
spend plus every saving.

Per trial (result["cost"], trainers/result.trial_cost): the stage-1 cache saved the cost recorded
when each hit entry was made; the feature cache saved the expert forwards stage 2 did not run. From
result["fidelity"] (absent: full fidelity): an SFT stopped at a rung after steps_done of steps_full
saved its measured SFT time scaled to the steps not run; an evaluation of eval_items_done of
eval_items_full items saved its measured time scaled the same way (early stop when
eval_early_stopped, else the rung's slimmer evaluation)."""
from __future__ import annotations

from typing import Any

MECHANISMS = ("stage1_cache", "feature_cache", "eval_early_stop", "stopped_rungs")


def _shortfall(measured: float, done: Any, full: Any) -> float:
    """What the part not run would have cost at the measured rate (0 when it all ran)."""
    if not done or not full or done >= full:
        return 0.0
    return measured * (full - done) / done


def trial_ledger(result: dict[str, Any]) -> dict[str, Any] | None:
    """One trial's spend, savings and naive cost; None when its result records no cost."""
    cost = result.get("cost")
    if not cost:
        return None
    spent = cost["process_s"]
    saved = {m: 0.0 for m in MECHANISMS}
    saved["stage1_cache"] = float(cost["saved"]["stage1_cache"]["process_s"])
    saved["feature_cache"] = float(cost["saved"]["feature_cache"]["process_s"])
    fid = result.get("fidelity") or {}
    saved["stopped_rungs"] += _shortfall(spent.get("sft", 0.0), fid.get("steps_done"), fid.get("steps_full"))
    evals = _shortfall(spent.get("eval", 0.0), fid.get("eval_items_done"), fid.get("eval_items_full"))
    saved["eval_early_stop" if fid.get("eval_early_stopped") else "stopped_rungs"] += evals
    total = float(cost["total_process_s"])
    return {"unit": cost["unit"], "total_s": total, "saved_s": saved, "naive_s": total + sum(saved.values()),
            "stage1_unknown": int(cost["saved"]["stage1_cache"].get("unknown", 0)),
            "feature_forwards_saved": int(cost["saved"]["feature_cache"].get("forwards", 0)),
            "flops_saved": int((cost.get("flops") or {}).get("feature_cache_saved", 0))}


def study_ledger(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The sums over the trials' results (those without a cost record are counted, not summed)."""
    rows = [r for r in map(trial_ledger, results) if r is not None]
    units = {r["unit"] for r in rows}
    total = sum(r["total_s"] for r in rows)
    naive = sum(r["naive_s"] for r in rows)
    return {"trials": len(results), "recorded": len(rows),
            "unit": units.pop() if len(units) == 1 else ("process_s (mixed devices)" if units else "process_s"),
            "total_s": total, "naive_s": naive, "ratio": total / naive if naive else None,
            "saved_s": {m: sum(r["saved_s"][m] for r in rows) for m in MECHANISMS},
            "stage1_unknown": sum(r["stage1_unknown"] for r in rows),
            "feature_forwards_saved": sum(r["feature_forwards_saved"] for r in rows),
            "flops_saved": sum(r["flops_saved"] for r in rows)}


def _hours(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 600 else f"{seconds / 3600:.2f} h"


def ledger_lines(ledger: dict[str, Any]) -> list[str]:
    """The ledger in a few lines (CLI report, leaderboard footer, cost.md)."""
    unit = "GPU" if ledger["unit"] == "gpu_s" else "process"
    lines = [f"cost: {_hours(ledger['total_s'])} {unit} time over {ledger['recorded']} of {ledger['trials']} trials "
             f"(naive: {_hours(ledger['naive_s'])}"
             + (f", {ledger['ratio']:.3f} of it)" if ledger["ratio"] is not None else ")")]
    names = {"stage1_cache": "stage-1 cache", "feature_cache": "feature cache", "eval_early_stop": "early-stopped evals",
             "stopped_rungs": "stopped rungs"}
    lines.append("saved: " + ", ".join(f"{names[m]} {_hours(v)}" for m, v in ledger["saved_s"].items()))
    if ledger["feature_forwards_saved"]:
        lines.append(f"feature cache: {ledger['feature_forwards_saved']} expert forwards not run "
                     f"({ledger['flops_saved'] / 1e12:.3g} TFLOP)")
    if ledger["stage1_unknown"]:
        lines.append(f"{ledger['stage1_unknown']} stage-1 cache hits on entries that recorded no cost (not counted)")
    return lines


def ledger_metrics(ledger: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of the parent run."""
    out = {"cost_total_s": ledger["total_s"], "cost_naive_s": ledger["naive_s"],
           **{f"cost_saved_{m}_s": v for m, v in ledger["saved_s"].items()}}
    if ledger["ratio"] is not None:
        out["cost_ratio"] = ledger["ratio"]
    return out
