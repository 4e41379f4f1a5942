"""eagle-explore: run, resume, join and inspect studies; run one trial or one evaluation.

Heavy modules (optuna, mlflow, torch) are imported inside the commands so `--help` stays fast.
Expected errors (bad study or trial file, unreachable database or tracking server) end with one
red line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from experts.errors import UnknownNameError
from explorer.backends.registry import BACKEND_NAMES, backend_name
from explorer.cli.errors import CliError, StorageOpt, StudyArg, TrackingOpt, WorkdirOpt
from explorer.cli.errors import err_console as _err_console
from explorer.cli.errors import guard as _guard
from explorer.cli.views import existing_study, print_leaderboard, print_path
from explorer.cli.experts import experts_cmd
from explorer.cli.plan import register as _register_plan
from explorer.cli.trial import register as _register_trial
from explorer.cli.views import register as _register_views
from explorer.redact import MaskingFilter, mask, remember

logger = logging.getLogger(__name__)

app = typer.Typer(name="eagle-explore", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Eagle Explorer: design-space studies of mixture-of-encoder MLLMs (Optuna + MLflow).")

@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    from rich.logging import RichHandler

    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=_err_console(), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(MaskingFilter())  # no URL password reaches the terminal or a log file
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("alembic", "mlflow", "urllib3", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # mlflow configures its own loggers on import (after this): tell it through its variable
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose else "WARNING")


# -- shared plumbing ------------------------------------------------------------------------------
@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) stops a controller as Ctrl-C does: its trials checkpoint and
    are marked interrupted, so the same command resumes them where they stopped."""
    import signal

    def stop(signum, frame):  # noqa: ARG001 -- signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _checked_study(study_file: Path, storage: str | None, tracking_uri: str | None, workdir: Path, *,
                   backend: str | None, ray_address: str | None, join: bool = False,
                   accept_base_change: bool = False):
    """The pre-flight of `run` and `worker`: the study file, its trials and the command line checked,
    then the workdir, the MLflow store and the database (a stored study's base trial) reached;
    nothing is written."""
    from explorer.preflight import preflight, reach_services

    checked = preflight(study_file, storage=storage, tracking_uri=tracking_uri, workdir=workdir, services=False,
                        expect="study")
    checked = reach_services(replace(checked, spec=_with_backend(checked.spec, backend, ray_address)), join=join,
                             accept_base_change=accept_base_change)
    return checked


def _exit_if_failed(outcome, study) -> None:
    """A finished study with no complete trial, or a round where every candidate failed, exits 1
    with why: failed trials by error class and the log of one of them."""
    from explorer.study.failures import failure_report, study_failure

    reason = study_failure(outcome)
    if reason is None:
        return
    from rich.markup import escape

    console = _err_console()
    for i, line in enumerate(failure_report(reason, study.get_trials(deepcopy=False), study.study_name)):
        console.print(f"[red]{escape(line)}[/red]" if i == 0 else escape(line))
    raise typer.Exit(1)


BackendOpt = Annotated[Optional[str], typer.Option("--backend", help=f"{' | '.join(BACKEND_NAMES)} (default: the study file's).")]
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", help="Address of an existing Ray cluster (default: the study file's, RAY_ADDRESS, or a local Ray).")]


def _with_backend(spec, backend: str | None, ray_address: str | None):
    """The study spec with the command line's backend and Ray address applied (checked first)."""
    if backend is not None:
        try:
            backend = backend_name(backend)
        except UnknownNameError as err:
            raise CliError(f"--backend: {err}") from None
    backend = backend or spec.backend
    if ray_address is not None:
        if backend != "ray":
            raise CliError("--ray-address: only used with the ray backend (add --backend ray)")
        spec = spec.model_copy(update={"ray_address": ray_address})
    return spec.model_copy(update={"backend": backend})


# -- commands -------------------------------------------------------------------------------------
@app.command()
def run(study_file: StudyArg, storage: StorageOpt = None, tracking_uri: TrackingOpt = None,
        workdir: WorkdirOpt = Path("."), backend: BackendOpt = None, ray_address: RayAddressOpt = None,
        accept_base_change: Annotated[bool, typer.Option(
            "--accept-base-change", help="Resume even though the base trial changed (recorded in the study).")] = False,
        ) -> None:
    """Run a study to the end, or resume it (same command)."""
    with _guard():
        checked = _checked_study(study_file, storage, tracking_uri, workdir, backend=backend, ray_address=ray_address,
                                 accept_base_change=accept_base_change)
        spec, workdir, storage_url = checked.spec, checked.workdir, checked.storage_url
        uri, artifacts = checked.tracking_uri, checked.artifact_root
        from explorer.plan import check_memory

        check_memory(spec)  # a trial estimated over resources.gpu_memory_gb stops the study here
        from explorer.tracking.tracker import MlflowTracker

        tracker = MlflowTracker(uri, spec.name, artifact_root=artifacts, spec=spec, workdir=workdir)
        if uri.startswith(("http://", "https://")):
            tracker.check()  # an unreachable server fails here, before the workdir is touched
        workdir.mkdir(parents=True, exist_ok=True)
        tracker.check()
        from explorer.controller import run_study
        from explorer.cli.progress import StudyProgress
        from explorer.study.storage import open_study

        # creates or resumes it; a mismatching study fails here
        study = open_study(spec, storage_url, accept_base_change=accept_base_change)
        progress = StudyProgress(study, total=_planned(spec), concurrency=spec.resources.max_concurrent_trials)
        try:
            with progress, _sigterm_stops():
                outcome = run_study(spec, storage_url, workdir, tracker=tracker, backend=spec.backend,
                                    progress=progress)
        except KeyboardInterrupt:
            _err_console().print("[yellow]interrupted[/yellow]: run the same command to resume")
            raise typer.Exit(130) from None
        study = existing_study(spec, storage_url)
        if outcome.finished:
            tracker.on_study_end(study)
        print_leaderboard(study, workdir=workdir)
        print_path(study)
        ui = ["eagle-explore", "ui", str(study_file), "--workdir", str(workdir)] + (["--tracking-uri", uri] if artifacts is None else [])
        typer.echo(f"Open the MLflow UI: {mask(shlex.join(ui))}")
        if not outcome.finished:
            _err_console().print(f"[yellow]study not finished[/yellow]: {outcome.stopped_reason}")
            raise typer.Exit(1)
        _exit_if_failed(outcome, study)


def _planned(spec) -> int | None:
    """Planned number of trials, when the strategy can tell (for the progress bar and ETA)."""
    try:
        from explorer.strategies import build_strategy

        strategy = build_strategy(spec)
    except Exception:  # noqa: BLE001 -- only a display hint
        return spec.budget.max_trials
    value = strategy.total_planned()
    return min(value, spec.budget.max_trials or value)


@app.command()
def worker(study_file: StudyArg,
           storage: Annotated[str, typer.Option("--storage", help="Storage URL of the running study (shared database).")],
           tracking_uri: TrackingOpt = None, workdir: WorkdirOpt = Path("."), backend: BackendOpt = None,
           ray_address: RayAddressOpt = None) -> None:
    """Join a running study from another machine (takes trials from the shared database)."""
    with _guard():
        checked = _checked_study(study_file, storage, tracking_uri, workdir, backend=backend, ray_address=ray_address,
                                 join=True)
        spec, workdir = checked.spec, checked.workdir
        uri, artifacts = checked.tracking_uri, checked.artifact_root
        from explorer.tracking.tracker import MlflowTracker

        tracker = MlflowTracker(uri, spec.name, artifact_root=artifacts, spec=spec, workdir=workdir)
        remember(storage)
        study = existing_study(spec, storage)  # joining needs a study that `run` created
        workdir.mkdir(parents=True, exist_ok=True)
        tracker.check()
        from explorer.controller import run_worker
        from explorer.cli.progress import StudyProgress

        try:
            with StudyProgress(study, total=_planned(spec), concurrency=spec.resources.max_concurrent_trials) as progress, \
                    _sigterm_stops():
                outcome = run_worker(spec, storage, workdir, tracker=tracker, backend=spec.backend, progress=progress)
        except KeyboardInterrupt:
            _err_console().print("[yellow]interrupted[/yellow]: run the same command to resume")
            raise typer.Exit(130) from None
        typer.echo(f"worker done: {outcome.n_complete} of {outcome.n_trials} trials complete"
                   f"{'' if outcome.finished else f' (stopped: {outcome.stopped_reason})'}")
        if outcome.finished:
            _exit_if_failed(outcome, study)


_register_views(app)  # status, leaderboard, export, ui, report (their own file)


@app.command()
def check(file: Annotated[Path, typer.Argument(help="Study file or trial spec (YAML).")],
          storage: StorageOpt = None, tracking_uri: TrackingOpt = None, workdir: WorkdirOpt = Path("."),
          nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, help="Processes per trial (default: the study's).")] = None,
          offline: Annotated[bool, typer.Option("--offline", help="Do not reach the database and tracking store.")] = False,
          staged: Annotated[bool, typer.Option(
              "--staged", help="Data, images, benchmark copies and local weights must be there, as `run` "
                               "requires (on the machine that runs the study).")] = False) -> None:
    """The pre-flight of run/worker/trial alone: the whole file, every trial spec it makes, its files,
    experts built on the meta device, storage and tracking reached. Writes nothing; exit 2 on a problem.
    Run-only files not staged yet (data, images, benchmark copies, local weights) are one notice, so a
    study can be checked before its data is copied; `--staged` refuses them, as `run` does."""
    with _guard():
        from explorer.preflight import CheckedTrial, not_staged_line, preflight

        checked = preflight(file, storage=storage, tracking_uri=tracking_uri, workdir=workdir, nproc=nproc,
                            services=not offline, staged=staged)
        if not_staged_line(checked):
            typer.echo(not_staged_line(checked), err=True)
        if isinstance(checked, CheckedTrial):
            ts = checked.spec
            typer.echo(f"ok: {file}: trial {ts.name}: {'+'.join(e.preset for e in ts.experts)}, fusion {ts.fusion.name}, "
                       f"recipe {ts.train.recipe}, {len(ts.eval.benchmarks)} benchmark(s)")
            return
        where = (f"; storage {checked.storage_url}; tracking {checked.tracking_uri}" if checked.services_reached
                 else " (storage and tracking not reached: --offline)")
        typer.echo(f"ok: {file}: study {checked.spec.name}: {checked.trials_checked} trial spec(s) checked{where}")


_register_plan(app)  # `plan` lives in its own file

_register_trial(app)  # `trial` and `eval`: one job on this machine


app.command("experts")(experts_cmd)

if __name__ == "__main__":  # pragma: no cover
    app()
