"""Passwords in storage and tracking URLs never reach a terminal, a log file or a store.

A URL's password is replaced by `***` wherever a URL is shown; every log record and every error
line the CLI prints passes through `mask`. Passwords can stay out of URLs altogether: psycopg2 reads
PGPASSWORD or ~/.pgpass (PGPASSFILE), MLflow's HTTP client MLFLOW_TRACKING_USERNAME/PASSWORD."""
from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
# scheme://user:password@host  (the password may hold anything but '@' and whitespace)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
_known: set[str] = set()


def remember(url: str | None) -> None:
    """Keep the password of `url` so that it is masked even where it appears outside a URL
    (a driver's error message, a URL-decoded copy)."""
    if not url:
        return
    from urllib.parse import unquote

    for m in _URL_PASSWORD.finditer(url):
        pw = m.group("pw")
        _known.update({pw, unquote(pw)})


def mask(text: Any) -> str:
    """`text` with every URL password and every remembered password replaced by ***."""
    out = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, str(text))
    for pw in sorted(_known, key=len, reverse=True):
        if len(pw) >= 3:  # a 1-2 character password would mask unrelated text
            out = out.replace(pw, MASK)
    return out


class MaskingFilter(logging.Filter):
    """Formats each record's message once and masks it (attached to the CLI's handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_data(obj: Any) -> Any:
    """A copy of a JSON-like structure with every string masked (study files logged as artifacts)."""
    if isinstance(obj, dict):
        return {k: mask_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_data(v) for v in obj]
    return mask(obj) if isinstance(obj, str) else obj
