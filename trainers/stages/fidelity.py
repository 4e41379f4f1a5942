"""A rung request: stop SFT at a fraction of its steps, evaluate there, and say so in result.json.

A multi-fidelity study (explorer/fidelity.py) writes DIR/fidelity.json before each launch of a
rung. The trial spec, and so its hash (trainers/launch.spec_state), is the same at every rung: a
later launch with a larger fraction continues SFT from the rung's checkpoint, on the same cosine
schedule over the full steps, so rung 0 + rung 1 trains exactly as one uninterrupted run. Without
the file a trial runs at full fidelity."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from trainers import trial_dir as TD



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EarlyStopRequest(_Strict):
    """Stop the evaluation when the trial is clearly behind a reference (the round leader's
    per-item scores at this rung): a one-sided Wilcoxon signed-rank test over the paired items."""

    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_items: int = Field(default=20, ge=5)  # paired items before the first test
    every: int = Field(default=16, gt=0)  # items between tests
    reference: dict[str, dict[str, float]]  # benchmark -> question id -> score


class FidelityRequest(_Strict):
    rung: int = Field(ge=0)
    fraction: float = Field(gt=0, le=1)  # of the SFT steps
    eval_limit: int | None = Field(default=None, gt=0)  # items per benchmark at this rung
    final: bool = False  # the top rung: the full evaluation with intervals
    intervals: bool = False  # below the top: bootstrap intervals too (promotion by intervals)
    early_stop: EarlyStopRequest | None = None


def read_request(out_dir: str | Path) -> FidelityRequest | None:
    path = Path(out_dir) / TD.FIDELITY
    if not path.is_file():
        return None
    try:
        return FidelityRequest.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a rung request: {str(err).splitlines()[0]}") from None


def write_request(out_dir: str | Path, request: FidelityRequest | None) -> None:
    """Atomically; None removes a previous request (the launch is at full fidelity)."""
    path = Path(out_dir) / TD.FIDELITY
    if request is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(request.model_dump_json())
    tmp.replace(path)


def stop_step(fraction: float, steps: int) -> int:
    """The SFT step a rung stops at: at least one step, all of them at fraction 1."""
    return steps if fraction >= 1 else max(1, min(steps, math.ceil(fraction * steps - 1e-9)))


def fidelity_block(request: FidelityRequest | None, steps_done: int, steps_full: int,
                   evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """result.json's "fidelity" (the cost ledger reads these exact keys)."""
    ev = evaluation or {}
    return {"rung": request.rung if request else 0, "fraction": request.fraction if request else 1.0,
            "steps_done": int(steps_done), "steps_full": int(steps_full),
            "stopped": steps_done < steps_full, "eval_early_stopped": bool(ev.get("early_stopped", False)),
            "eval_items_done": int(ev.get("items_done", 0)), "eval_items_full": int(ev.get("items_full", 0))}
