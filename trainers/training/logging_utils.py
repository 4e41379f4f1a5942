"""Rank-zero logging: one rich console handler on rank 0, a plain file handler per rank."""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

_CONFIGURED = False


def get_rank() -> int:
    return int(os.environ.get("RANK", "0"))


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return get_rank() == 0


def setup_logging(log_dir: str | Path | None = None, level: int = logging.INFO) -> None:
    """Terminal output (rich) only from rank 0; every rank writes logs/rank<k>.log when log_dir is set."""
    global _CONFIGURED
    root = logging.getLogger()
    if _CONFIGURED:
        return
    root.setLevel(level)
    console: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        console = RichHandler(show_path=False, rich_tracebacks=False)
    else:  # log files: one plain line per record, no wrapping at 80 columns
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console.addFilter(_RankZeroFilter())
    console.setLevel(level)
    root.addHandler(console)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(log_dir) / f"rank{get_rank()}.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    for noisy in ("urllib3", "filelock", "PIL", "DeepSpeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:  # progress bars of weight loading/saving would flood the logs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    _CONFIGURED = True


_ERROR_LINE = re.compile(r"^(?:\[(?:rank|default)\d+\]:\s*)*(?:[A-Za-z_][\w]*\.)*([A-Z]\w*(?:Error|Exception)):\s*(.*)$")
_WRAPPERS = ("ChildFailedError", "TrialFailed", "RunnerError", "CalledProcessError")


def find_error(lines: list[str]) -> tuple[str, str] | None:
    """(error class, message) of the first Python error a log reports ("[rank0]: pkg.mod.XError: msg"
    -> ("XError", "msg")), wrappers such as torchrun's ChildFailedError skipped."""
    for line in lines:
        m = _ERROR_LINE.match(line.strip())
        if m and m.group(1) not in _WRAPPERS:
            return m.group(1), m.group(2).strip()
    return None
