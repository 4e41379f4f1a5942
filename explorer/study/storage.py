"""Optuna RDB storage (SQLite by default, PostgreSQL for many workers), heartbeats, pruners, and
the planner lock that makes enqueueing a round atomic across controllers."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from explorer.redact import mask
from explorer.study.expectation import EXPECT_ATTR
from explorer.study.stats import IMPROVEMENT_ATTR, TIE_ATTR
from explorer.study.spec import StudyError, StudySpec
from trainers.spec import changed_fields

logger = logging.getLogger(__name__)

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
}
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
FINGERPRINT_ATTR = "eagle:fingerprint"
BASE_TRIAL_ATTR = "eagle:base_trial"  # the base trial as resolved when the study was created
BASE_CHANGES_ATTR = "eagle:base_trial_changes"  # accepted changes: time, trials before, fields
OWNER_ATTR = "eagle:owner"  # trial system attr: the controller process that claimed it


class StorageError(RuntimeError):
    """The study database is unusable (unsupported URL, unreachable server, mismatching study)."""


def normalize_storage_url(url: str) -> str:
    """`postgresql://` means psycopg2 (the declared dependency): SQLAlchemy 2.1 would pick psycopg 3."""
    try:
        parsed = make_url(url)
    except Exception:
        return url  # _backend() reports malformed URLs
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def default_storage_url(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'study.db'}"


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    name = spec.pruner.type
    if name not in PRUNERS:
        raise StudyError(f"{spec.source}: pruner.type: unknown pruner {name!r} (known: {', '.join(PRUNERS)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return PRUNERS[name](**spec.pruner.options)
    except (TypeError, ValueError) as err:
        raise StudyError(f"{spec.source}: pruner.options: {err}") from None


def _backend(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception:  # sqlalchemy raises ArgumentError for malformed URLs
        raise StorageError(f"{url}: not a database URL (e.g. sqlite:///study.db, postgresql://host/db)") from None


def check_storage(spec: StudySpec) -> None:
    """Cheap checks before anything runs: URL form and pruner options."""
    build_pruner(spec)
    if spec.storage is not None:
        try:
            backend = _backend(spec.storage)
        except StorageError as err:
            raise StudyError(f"{spec.source}: storage: {err}") from None
        if backend not in SUPPORTED_BACKENDS:
            raise StudyError(f"{spec.source}: storage: unsupported database {backend!r} "
                             f"(supported: {', '.join(SUPPORTED_BACKENDS)})")


def make_storage(spec: StudySpec, storage_url: str) -> optuna.storages.RDBStorage:
    storage_url = normalize_storage_url(storage_url)
    backend = _backend(storage_url)
    if backend not in SUPPORTED_BACKENDS:
        raise StorageError(f"{mask(storage_url)}: unsupported database {backend!r} (supported: {', '.join(SUPPORTED_BACKENDS)})")
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        db = make_url(storage_url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # heartbeat threads write concurrently
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                storage_url, engine_kwargs=engine_kwargs,
                heartbeat_interval=spec.heartbeat_interval_s, grace_period=spec.grace_period_s,
            )
    except Exception as err:  # connection refused, missing database, bad credentials
        raise StorageError(f"{mask(storage_url)}: cannot open the study database: {str(err).splitlines()[0]}") from None


def open_study(spec: StudySpec, storage_url: str, *, create: bool = True,
               storage: optuna.storages.RDBStorage | None = None,
               sampler: optuna.samplers.BaseSampler | None = None,
               accept_base_change: bool = False) -> optuna.Study:
    """Create or load the study; a resumed study must have been created from the same
    strategy, search space and objective (its fingerprint is stored in the study) and the same
    base trial (stored whole, so a change is named field by field)."""
    storage = storage or make_storage(spec, storage_url)
    if sampler is None:
        sampler = optuna.samplers.RandomSampler(seed=spec.seed)
    pruner = build_pruner(spec)
    exists = spec.name in {s.study_name for s in storage.get_all_studies()}
    if not exists and not create:
        raise StorageError(f"{mask(storage_url)}: no study named {spec.name!r} to join (start it with `eagle-explore run`)")
    study = optuna.create_study(storage=storage, study_name=spec.name, direction=spec.objective.direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    study_id = storage.get_study_id_from_name(spec.name)
    if check_stored_study(spec, storage, storage_url) is None:
        storage.set_study_system_attr(study_id, FINGERPRINT_ATTR, spec.fingerprint())
    _check_base_trial(storage, study_id, spec, storage_url, accept_base_change)
    _record_expectation(storage, study_id, spec, storage_url, n_trials=len(study.trials))
    storage.set_study_system_attr(study_id, TIE_ATTR, spec.strategy.tie_threshold)  # for reports
    if spec.strategy.type == "greedy":
        storage.set_study_system_attr(study_id, IMPROVEMENT_ATTR, spec.strategy.improvement)
    logger.info("study %r at %s: %d trials stored", spec.name, mask(storage_url), len(study.trials))
    return study


def _record_expectation(storage, study_id: int, spec: StudySpec, storage_url: str, *, n_trials: int) -> None:
    """The file's `expect:` is recorded when the study is created; a resumed study whose file adds,
    changes or drops it is refused (an expectation is written before the run, never fitted to it)."""
    attrs = storage.get_study_system_attrs(study_id)
    new = spec.expect.model_dump(mode="json") if spec.expect is not None else None
    old = attrs.get(EXPECT_ATTR)  # None too for a study created before expectations were recorded
    if EXPECT_ATTR not in attrs and not n_trials:
        storage.set_study_system_attr(study_id, EXPECT_ATTR, new)
    elif new != old:
        what = f"added after {n_trials} trials ran" if old is None else \
            f"differs from the expectation the study was created with ({old})"
        raise StorageError(f"{mask(storage_url)}: study {spec.name!r}: expect: {what}; an expectation is written "
                           "before any run and not edited after it: use a new study name")


def check_stored_study(spec: StudySpec, storage: optuna.storages.BaseStorage, storage_url: str) -> str | None:
    """A stored study of this name must come from the same strategy, search space and objective, in
    the same direction; returns its fingerprint (None: not stored yet, or stored without one)."""
    studies = {s.study_name: s for s in storage.get_all_studies()}
    if spec.name not in studies:
        return None
    direction = studies[spec.name].direction.name.lower()
    stored = storage.get_study_system_attrs(storage.get_study_id_from_name(spec.name)).get(FINGERPRINT_ATTR)
    if stored is not None and stored != spec.fingerprint():
        raise StorageError(f"{mask(storage_url)}: study {spec.name!r} was created from a different strategy, search "
                           "space or objective; use a new study name")
    if direction != spec.objective.direction:
        raise StorageError(f"{mask(storage_url)}: study {spec.name!r} is stored as {direction}")
    return stored


def changed_base_trial(spec: StudySpec, storage: optuna.storages.BaseStorage, storage_url: str,
                       accept: bool = False) -> list[str] | None:
    """Fields of the base trial changed since the stored study was created (None: no study or no
    base trial stored); read only. A change is an error naming them unless `accept`."""
    if spec.name not in {s.study_name for s in storage.get_all_studies()}:
        return None
    stored = storage.get_study_system_attrs(storage.get_study_id_from_name(spec.name)).get(BASE_TRIAL_ATTR)
    if stored is None:  # a new study (or one created before the base trial was recorded)
        return None
    changed = changed_fields(stored, spec.base_trial_data)
    if changed and not accept:
        more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
        raise StorageError(f"{mask(storage_url)}: study {spec.name!r} was created from a different base trial: "
                           f"changed {', '.join(changed[:4])}{more}; pass --accept-base-change to `run` to continue with "
                           "the new one (recorded in the study), or use a new study name")
    return changed


def _check_base_trial(storage: optuna.storages.RDBStorage, study_id: int, spec: StudySpec, storage_url: str,
                      accept: bool) -> None:
    """A resumed study runs its trials from the base trial it was created with; a changed one is an
    error naming the fields, or, with `accept`, an override recorded in the study."""
    current = spec.base_trial_data
    changed = changed_base_trial(spec, storage, storage_url, accept)
    if changed is None:
        storage.set_study_system_attr(study_id, BASE_TRIAL_ATTR, current)
        return
    if not changed:
        return
    attrs = storage.get_study_system_attrs(study_id)
    history = list(attrs.get(BASE_CHANGES_ATTR, []))
    history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "trials_before": len(storage.get_all_trials(study_id, deepcopy=False)), "changed": changed})
    storage.set_study_system_attr(study_id, BASE_CHANGES_ATTR, history)
    storage.set_study_system_attr(study_id, BASE_TRIAL_ATTR, current)
    logger.warning("study %r: base trial changed (%s); accepted and recorded", spec.name, "; ".join(changed))


def fail_stale_trials(study: optuna.Study) -> None:
    """RUNNING trials whose heartbeat stopped (their controller died) become FAIL, to be re-run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks (Linux /proc): tells a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the parenthesised command name


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def owner_token() -> dict[str, Any]:
    """Who claims a trial: host, pid namespace, pid and the pid's start time."""
    return {"host": socket.gethostname(), "pidns": _pid_namespace(), "pid": os.getpid(),
            "start": _process_start(os.getpid())}


def owner_is_gone(owner: Any) -> bool:
    """True only for an owner that ran where we can see its process (same host and pid namespace)
    and whose process no longer exists; anything else waits for the heartbeat grace period."""
    if not isinstance(owner, dict) or owner.get("start") is None or owner.get("pidns") is None:
        return False
    if owner.get("host") != socket.gethostname() or owner.get("pidns") != _pid_namespace():
        return False
    return _process_start(int(owner["pid"])) != owner["start"]


def fail_orphaned_trials(storage: optuna.storages.BaseStorage, study_id: int) -> None:
    """RUNNING trials whose controller process on this machine has died become FAIL at once (an
    interruption, re-run on resume) instead of after grace_period_s."""
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.system_attrs.get(OWNER_ATTR)
        if not owner_is_gone(owner):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile
        logger.info("trial %d: its controller (pid %s) is gone; it will run again", t.number, owner["pid"])


_ENGINES: dict[str, sqlalchemy.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: str) -> sqlalchemy.Engine:
    url = normalize_storage_url(url)
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = sqlalchemy.create_engine(url, pool_pre_ping=True)
        return _ENGINES[url]


@contextlib.contextmanager
def planner_lock(storage_url: str, study_name: str) -> Iterator[None]:
    """Exclusive across processes (and machines, for PostgreSQL) while a controller reads the
    trials and enqueues the missing ones. Released by the OS/server if the holder dies."""
    backend = _backend(storage_url)
    if backend == "sqlite":
        db = make_url(storage_url).database
        if not db or db == ":memory:":
            yield
            return
        lock_path = Path(f"{db}.{study_name}.lock")
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    elif backend == "postgresql":
        key = zlib.crc32(f"eagle-explorer:{study_name}".encode())  # fits a signed bigint
        with _engine(storage_url).connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    else:
        raise StorageError(f"{mask(storage_url)}: no planner lock for {backend!r} (supported: {', '.join(SUPPORTED_BACKENDS)})")
