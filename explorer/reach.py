"""Reach the study database, the MLflow store and the work directory without writing anything:
a local store that exists is opened read-only, one that does not must be creatable, a server must
answer. Each problem is one line (StorageError, TrackingError, PreflightError)."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

from explorer.redact import mask
from explorer.study.spec import StudySpec

CONNECT_TIMEOUT_S = 10
_SQL_SCHEMES = ("postgresql", "mysql", "mssql")


class PreflightError(ValueError):
    """A problem found before anything runs: one line naming the file, field or place."""


def creatable_dir(path: Path, what: str) -> None:
    """`path` is a directory, or its nearest existing ancestor is a writable directory."""
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PreflightError(f"{what}: {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PreflightError(f"{what}: {path} is not writable")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"{what}: cannot create {path} ({parent} is not a writable directory)")


def sqlite_tables(db: Path, what: str) -> set[str]:
    """Tables of an existing SQLite file, opened read-only (a file that is not a database fails)."""
    if not db.is_file():
        raise PreflightError(f"{what}: {db} is not a file")
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=CONNECT_TIMEOUT_S)
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise PreflightError(f"{what}: cannot read {db}: {err}") from None


def _server_tables(url: str, what: str) -> set[str]:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
                return set(sqlalchemy.inspect(conn).get_table_names())
        finally:
            engine.dispose()
    except Exception as err:  # noqa: BLE001 -- refused, unknown host, bad credentials, missing driver
        raise PreflightError(f"{what}: cannot reach {mask(url)}: {str(err).strip().splitlines()[0]}") from None


def reach_storage(spec: StudySpec, url: str, *, join: bool = False, what: str = "study storage",
                  accept_base_change: bool = False) -> None:
    """The study database answers (or can be created), and a study stored under this name matches
    the spec, its base trial included (unless `accept_base_change`); `join`: the study must already
    exist (a worker joins what `run` created)."""
    from sqlalchemy.engine import make_url

    from explorer.study.storage import (SUPPORTED_BACKENDS, StorageError, changed_base_trial, check_stored_study, make_storage,
                                  normalize_storage_url)

    url = normalize_storage_url(url)
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
    except Exception:  # noqa: BLE001 -- sqlalchemy's ArgumentError for malformed URLs
        raise StorageError(f"{mask(url)}: not a database URL (e.g. sqlite:///study.db, postgresql://host/db)") from None
    if backend not in SUPPORTED_BACKENDS:
        raise StorageError(f"{mask(url)}: unsupported database {backend!r} (supported: {', '.join(SUPPORTED_BACKENDS)})")
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            if join:
                raise StorageError(f"{mask(url)}: an in-memory database holds no study to join")
            return
        if not Path(db).exists():
            if join:
                raise StorageError(f"{mask(url)}: no study database at {db} (start the study with `eagle-explore run`)")
            creatable_dir(Path(db).parent, what)
            return
        tables = sqlite_tables(Path(db), what)
    else:
        tables = _server_tables(url, what)
    if "studies" not in tables:  # a database Optuna has not used yet
        if join:
            raise StorageError(f"{mask(url)}: no study named {spec.name!r} to join (start it with `eagle-explore run`)")
        return
    storage = make_storage(spec, url)  # its tables exist: opening it writes nothing
    check_stored_study(spec, storage, url)
    changed_base_trial(spec, storage, url, accept_base_change)
    if join and spec.name not in {s.study_name for s in storage.get_all_studies()}:
        raise StorageError(f"{mask(url)}: no study named {spec.name!r} to join (start it with `eagle-explore run`)")


def reach_tracking(uri: str, what: str = "tracking URI") -> None:
    """The MLflow store answers: a local SQLite file or folder exists readable or can be created; a
    database server answers; anything else (http, databricks...) is asked by MLflow itself."""
    from explorer.tracking.tracker import MlflowTracker, TrackingError

    if "://" not in uri:
        raise TrackingError(f"tracking URI {mask(uri)!r} is not a URI (sqlite:///PATH, http://HOST:PORT, file:///DIR)")
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):])
        if path.exists():
            sqlite_tables(path, what)
        else:
            creatable_dir(path.parent, what)
    elif scheme == "file":
        creatable_dir(Path(unquote(urlparse(uri).path)), what)
    elif scheme.split("+", 1)[0] in _SQL_SCHEMES:
        _server_tables(uri, what)
    else:
        MlflowTracker(uri).check()  # a remote store: nothing on this machine is written
