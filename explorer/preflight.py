"""The pre-flight that `check`, `run`, `worker`, `trial`, `eval` (and `plan`) do before anything is
written: the whole file validated (every field, cross-field rule and registry name), every trial
spec the study can generate built and checked by trainers.preflight (files, benchmark copies,
experts and fusion on the meta device), and the work directory, the study database and the MLflow
store reached without writing. Problems are one line naming the file and the field.

`staged=False` (what `plan` and `check` check; `check --staged` and a run do not): files only a run reads (data, image
folder, benchmark copies, local expert weights) may be absent; they are returned in `not_staged`
(one notice line, see `not_staged_line`) while everything else is checked as for a run.

`preflight(path, ...)` takes a study or a trial file and returns a CheckedStudy or a CheckedTrial."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from explorer.redact import remember
from explorer.reach import PreflightError, creatable_dir, reach_storage, reach_tracking
from explorer.study.spec import StudySpec
from explorer.study.load import parse_study
from trainers.spec import SpecError, TrialSpec, parse_trial_spec, read_yaml_mapping

# keys only a study file has (a file with none of them is read as a trial spec)
STUDY_ONLY_KEYS = frozenset(StudySpec.model_fields) - frozenset(TrialSpec.model_fields) - {"description"}
_KINDS = {"study": "study file", "trial": "trial spec", None: "study or trial file"}

__all__ = ["CheckedEval", "CheckedStudy", "CheckedTrial", "PreflightError", "not_staged_line", "preflight",
           "preflight_eval", "reach_services", "storage_url_for", "study_trial_points", "tracking_for"]


@dataclass(frozen=True)
class CheckedTrial:
    path: Path
    spec: TrialSpec
    not_staged: tuple[str, ...] = ()  # "field path" of each absent file (staged=False only)


@dataclass(frozen=True)
class CheckedStudy:
    path: Path
    spec: StudySpec
    workdir: Path
    storage_url: str
    tracking_uri: str
    artifact_root: str | None  # the embedded store keeps artifacts in the workdir; None: the server's
    trials_checked: int  # distinct trial specs built and checked
    services_reached: bool
    storage_from: str = "study storage"  # where the URL came from, for its errors
    tracking_from: str = "tracking URI"
    not_staged: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckedEval:
    model_dir: Path
    trial_yaml: Path
    spec: TrialSpec


def storage_url_for(spec: StudySpec, storage: str | None, workdir: Path) -> str:
    from explorer.study.storage import default_storage_url

    url = storage or spec.storage or default_storage_url(workdir)
    remember(url)  # its password is masked in every line from now on
    return url


def tracking_for(spec: StudySpec | None, tracking_uri: str | None, workdir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact root): the embedded SQLite store keeps artifacts in the workdir."""
    from explorer.tracking.tracker import default_artifact_root, default_tracking_uri

    uri = tracking_uri or (spec.tracking_uri if spec is not None else None)
    if uri:
        remember(uri)
        return uri, None
    return default_tracking_uri(workdir), default_artifact_root(workdir)


def is_study_file(data: dict[str, Any]) -> bool:
    return bool(STUDY_ONLY_KEYS & set(data))


def preflight(path: str | Path, *, storage: str | None = None, tracking_uri: str | None = None,
              workdir: str | Path = ".", nproc: int | None = None, services: bool = True,
              join: bool = False, expect: str | None = None, staged: bool = True,
              accept_base_change: bool = False) -> CheckedStudy | CheckedTrial:
    """Check a study or trial file completely; raises a one-line error, writes nothing.
    `nproc`: processes per trial (default: the study's resources, 1 for a trial file); `services`:
    reach the workdir, storage and tracking store; `join`: the study must exist (a worker);
    `expect`: "study" or "trial" when the command takes only one kind; `staged=False`: planning
    (module doc); `accept_base_change`: a stored study's changed base trial is no error."""
    path = Path(path)
    if not path.is_file():
        raise PreflightError(f"{path}: {_KINDS[expect]} not found")
    data = read_yaml_mapping(path, f"a {_KINDS[expect]}", PreflightError)
    kind = "study" if is_study_file(data) else "trial"
    if expect is not None and kind != expect:
        raise PreflightError(f"{path}: a {_KINDS[kind]}, not a {_KINDS[expect]} "
                             f"(run it with `eagle-explore {'run' if kind == 'study' else 'trial'}`)")
    unstaged: list[str] | None = None if staged else []
    if kind == "trial":
        spec = parse_trial_spec(data, str(path))
        check_trial_spec(spec, str(path), nproc or 1, unstaged)
        return CheckedTrial(path, spec, _distinct(unstaged))
    spec = parse_study(data, str(path), path.resolve().parent)
    n = check_study_trials(spec, nproc, unstaged)
    work = Path(workdir).expanduser().resolve()
    uri, artifacts = tracking_for(spec, tracking_uri, work)
    checked = CheckedStudy(path, spec, work, storage_url_for(spec, storage, work), uri, artifacts, n, False,
                           _origin(path, "storage", storage, spec.storage, "study database"),
                           _origin(path, "tracking_uri", tracking_uri, spec.tracking_uri, "MLflow store"),
                           _distinct(unstaged))
    return reach_services(checked, join=join, accept_base_change=accept_base_change) if services else checked


def _distinct(items: list[str] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items or ()))  # every trial of a study names the base trial's files


def not_staged_line(checked: CheckedStudy | CheckedTrial) -> str | None:
    """The one notice line of a planning pre-flight: the absent files a run will need."""
    if not checked.not_staged:
        return None
    return f"notice: {checked.path}: not staged yet (a run needs them): {', '.join(checked.not_staged)}"


def _origin(path: Path, field: str, cli: str | None, spec_value: str | None, default: str) -> str:
    """Where a URL came from, for its error: the command line, the study file or the workdir default."""
    if cli:
        return f"--{field.replace('_', '-')}"
    return f"{path}: {field}" if spec_value else f"--workdir ({default})"


def reach_services(checked: CheckedStudy, *, join: bool = False, accept_base_change: bool = False) -> CheckedStudy:
    """The work directory, the MLflow store and the study database, reached without writing."""
    creatable_dir(checked.workdir, "--workdir")
    reach_tracking(checked.tracking_uri, checked.tracking_from)  # first: run creates the MLflow store first
    reach_storage(checked.spec, checked.storage_url, join=join, what=checked.storage_from,
                  accept_base_change=accept_base_change)
    return replace(checked, services_reached=True)


def check_trial_spec(spec: TrialSpec, source: str, nproc: int = 1, unstaged: list[str] | None = None) -> None:
    from trainers.preflight import check_trial

    check_trial(spec, source, nproc, unstaged=unstaged)


def study_trial_points(strategy) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Trials worth building before a study starts, one per distinct spec: the first round, the
    strategy's sample point, for greedy every candidate added to the base and the largest set, for
    a sampler each hyper-parameter at the ends of its range."""
    from explorer.strategies import TPE, Greedy

    points = [(p.params, p.user_attrs) for p in strategy.plan([]).items]
    params0, attrs0 = strategy.sample_point()
    points.append((params0, attrs0))
    if isinstance(strategy, Greedy):
        base = list(strategy.opts.base)
        sets = [base + [c] for c in strategy.candidates]
        sets.append(base + strategy.candidates[:strategy.max_size - len(base)])
        for letters in sets:
            key = f"{'+'.join(letters)}/s{attrs0['seed']}"
            points.append((strategy.fixed_params(letters), {**attrs0, "experts": "+".join(letters), "key": key}))
    if isinstance(strategy, TPE):
        for name in strategy.hparams:
            r = strategy.space.hparams[name]
            ends = r.choices if r.type == "categorical" else [r.low, r.high]
            for value in ends:
                value = int(value) if r.type == "int" else value
                points.append(({**params0, name: value}, {**attrs0, "key": f"{name}={value}"}))
    seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for params, attrs in points:
        seen.setdefault(json.dumps([params, attrs.get("experts")], sort_keys=True, default=str), (params, attrs))
    return list(seen.values())


def check_study_trials(spec: StudySpec, nproc: int | None = None, unstaged: list[str] | None = None) -> int:
    """Build and check the trial specs of study_trial_points; returns how many."""
    from explorer.study.trial_specs import build_trial_spec
    from explorer.strategies import build_strategy

    from explorer.strategies.fidelity import is_proxy_rung

    points = study_trial_points(build_strategy(spec))
    proxy = getattr(spec.strategy, "fidelity", None)
    for params, attrs in points:
        part = "strategy.fidelity.proxy" if is_proxy_rung(attrs, proxy) else "base_trial"
        where = f"{spec.source}: {part} (as trial {attrs.get('key', attrs.get('experts'))})"
        try:
            ts = build_trial_spec(spec, params, attrs)
            check_trial_spec(ts, where, nproc or spec.resources.nproc_per_trial, unstaged)
        except SpecError as err:
            msg = str(err)
            prefix = f"{spec.source}: base_trial: "
            raise PreflightError(where + ": " + msg[len(prefix):] if msg.startswith(prefix) else msg) from None
    return len(points)


def preflight_eval(checkpoint: str | Path, benchmarks: str | list[str], limit: int | None = None,
                   data_root: str | Path | None = None) -> CheckedEval:
    """What `eval` needs before it writes: a finished model, its trial.yaml (its experts built on the
    meta device; training data need not be there), known benchmarks and their copies (under
    data_root, or in the synthetic suite)."""
    from trainers.eval.cli import MODEL_CONFIG, eval_spec, resolve_checkpoint
    from trainers.preflight import check_eval_spec

    if data_root is not None and not Path(data_root).expanduser().is_dir():
        raise PreflightError(f"--data-root: directory not found: {data_root}")
    try:
        model_dir, trial_yaml = resolve_checkpoint(checkpoint)
        spec = eval_spec(trial_yaml, benchmarks, limit, data_root)
    except (FileNotFoundError, ValueError) as err:
        raise PreflightError(str(err).strip().splitlines()[0]) from None
    except KeyError as err:  # an unknown benchmark: the message lists the known ones
        raise PreflightError(f"--benchmarks: {err.args[0] if err.args else err}") from None
    check_eval_spec(spec.eval, f"{trial_yaml} (with --benchmarks/--limit/--data-root)")
    try:
        check_trial_spec(spec, str(trial_yaml), unstaged=[])
    except SpecError as err:
        raise PreflightError(str(err)) from None
    config = model_dir / MODEL_CONFIG
    try:
        saved = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise PreflightError(f"{config}: not a saved model ({str(err).splitlines()[0]})") from None
    n = saved.get("num_experts") if isinstance(saved, dict) else None
    if n != len(spec.experts):
        raise PreflightError(f"{config}: num_experts is {n!r}, {trial_yaml} has {len(spec.experts)} experts "
                             "(not the model this trial saved)")
    return CheckedEval(model_dir, trial_yaml, spec)
