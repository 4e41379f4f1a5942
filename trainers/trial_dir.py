"""The trial directory's layout: every file name a trial, its launcher, a backend or a report uses,
and the one reader of result.json."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRIAL_SPEC = "trial.yaml"  # the resolved spec the trial runs
RESULT = "result.json"  # what the trial reports (trainers/result.py)
METRICS = "metrics.jsonl"  # one line per logged step and evaluation
ATTEMPTS = "attempts.json"  # one entry per launch: start, exit, the steps each stage resumed from
SPEC_STATE = "spec_state.json"  # hash + content of the spec whose progress the directory holds
DATA_CHECKS = "data_checks.json"  # the launcher's image checks, read by the workers
FIDELITY = "fidelity.json"  # a multi-fidelity rung request (trainers/stages/fidelity.py)
PREEMPT_REQUEST = "PREEMPT"  # written by a launcher asked to stop; rank 0 polls it
PREEMPT_MARK = "preempted.json"  # written by rank 0 once the checkpoint is on disk
STAGE_DONE = "done.json"  # in stages/<tag>/: the stage finished
LOGS = "logs"
PREDICTIONS = "predictions"
CHECKPOINTS = "checkpoints"
STAGES = "stages"
FIRST_BUILD = "first_build"  # ZeRO-3: rank 0's copy of a part with no weights on disk, read by every rank
SUPERSEDED = ".superseded"  # progress of an older spec, moved aside by --restart
TORCHRUN_LOG = "torchrun.log"  # in logs/ (node k > 0 of a multi-node trial: torchrun.node<k>.log)
PREPARED = "prepared.json"  # in logs/: node 0 has prepared this launch (run id); the other nodes wait for it


def read_result(trial_dir: str | Path | None) -> dict[str, Any] | None:
    """result.json of a trial directory; None when there is none yet (or it cannot be read: logged)."""
    if not trial_dir:
        return None
    path = Path(trial_dir) / RESULT
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("cannot read %s: %s", path, err)
        return None
    return data if isinstance(data, dict) else None
