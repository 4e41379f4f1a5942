"""eagle-explore: run, resume, join and inspect studies; run one trial or one evaluation.

Heavy modules (optuna, mlflow, torch) are imported inside the commands so `--help` stays fast.
Expected errors (bad study or trial file, unreachable database or tracking server) end with one
red line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from explorer.redact import MaskingFilter, mask, remember

logger = logging.getLogger(__name__)

app = typer.Typer(name="eagle-explore", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Eagle Explorer: design-space studies of mixture-of-encoder MLLMs (Optuna + MLflow).")

EXIT_USAGE = 2
WorkdirOpt = Annotated[Path, typer.Option("--workdir", "-w", help="Work directory: study database, MLflow store, trial directories.")]
StorageOpt = Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default: the study file's, else sqlite in the workdir).")]
TrackingOpt = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: the study file's, else sqlite in the workdir).")]
StudyArg = Annotated[Path, typer.Argument(help="Study file (YAML).")]


class CliError(RuntimeError):
    """A user-facing problem found by the CLI itself."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Error classes that mean 'bad input or unreachable service' (only modules already imported
    can have raised theirs, so nothing heavy is imported here)."""
    found: list[type[BaseException]] = [CliError]
    for module, names in (("explorer.study", ("StudyError",)), ("trainers.spec", ("SpecError",)),
                          ("search_spaces.loader", ("SearchSpaceError",)), ("explorer.tracking", ("TrackingError",)),
                          ("explorer.storage", ("StorageError",)),
                          ("explorer.report", ("ReportError",)), ("sqlalchemy.exc", ("SQLAlchemyError",)),
                          ("optuna.exceptions", ("StorageInternalError", "DuplicatedStudyError")),
                          ("experts.registry", ("UnknownNameError",)), ("trainers.eval", ("UnknownBenchmarkError", "BenchmarkDataError"))):
        mod = sys.modules.get(module)
        found += [getattr(mod, n) for n in names if mod is not None and isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def _err_console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if "sqlalchemy" in type(err).__module__:
        text = f"study storage: {text}"
    return mask(text.splitlines()[0])


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 -- filtered just below
        if not isinstance(err, _expected_errors()):
            raise
        from rich.markup import escape

        logger.debug("expected error", exc_info=True)
        _err_console().print(f"[red]error:[/red] {escape(_one_line(err))}")
        raise typer.Exit(EXIT_USAGE) from None


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


def _storage_url(spec, storage: str | None, workdir: Path) -> str:
    from explorer.storage import default_storage_url

    url = storage or spec.storage or default_storage_url(workdir)
    remember(url)
    return url


def _tracking(spec, tracking_uri: str | None, workdir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact root): the embedded SQLite store keeps artifacts in the workdir."""
    from explorer.tracking import default_artifact_root, default_tracking_uri

    uri = tracking_uri or (spec.tracking_uri if spec is not None else None)
    if uri:
        remember(uri)
        return uri, None
    return default_tracking_uri(workdir), default_artifact_root(workdir)


def _existing_study(spec, storage_url: str):
    """Load a study for reading; never creates a database or a study."""
    import optuna

    if storage_url.startswith("sqlite:///"):
        db = Path(storage_url[len("sqlite:///"):])
        if not db.is_file():
            raise CliError(f"no study database at {db} (run `eagle-explore run` first, or pass --storage/--workdir)")
    from explorer.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(spec, storage_url)  # unreachable or unsupported: StorageError, one line
    try:
        return optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        raise CliError(f"study {spec.name!r} not found in {mask(storage_url)}") from None


def _load(study_file: Path, storage: str | None, workdir: Path):
    from explorer.study import load_study

    spec = load_study(study_file)
    return spec, _existing_study(spec, _storage_url(spec, storage, workdir.resolve()))


def _ui_command(tracking_uri: str, artifact_root: str | None, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
           "--host", "127.0.0.1", "--port", str(port)]
    if artifact_root:
        cmd += ["--default-artifact-root", artifact_root]
    return cmd


def _print_leaderboard(study, limit: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from explorer.report import leaderboard

    rows = leaderboard(study)
    # only settings that differ between rows are worth a column (a greedy study fixes them all)
    varying = [k for k in sorted({k for r in rows for k in r["params"]})
               if len({str(r["params"].get(k)) for r in rows}) > 1]
    table = Table(title=f"{study.study_name}: leaderboard ({study.direction.name.lower()})")
    cols = ["#", "experts", *varying, "value", "±", "n", "trials", "round", "MLflow run"]
    for col in cols:
        table.add_column(col, no_wrap=col in ("experts", "MLflow run"))
    for row in rows[:limit]:
        table.add_row(str(row["rank"]), row["experts"], *[str(row["params"].get(k, "")) for k in varying],
                      f"{row['value']:.4g}", f"{row['std']:.2g}" if row["n"] > 1 else "", str(row["n"]),
                      ",".join(map(str, row["trials"])), "" if row["round"] is None else str(row["round"]),
                      (row["mlflow_run_id"] or "")[:12])
    Console().print(table)


def _print_path(study) -> None:
    from rich.console import Console

    from explorer.report import format_path, greedy_path

    path = greedy_path(study)
    if path:
        Console(soft_wrap=True).print(f"[bold]Greedy path:[/bold] {format_path(path)}")


BackendOpt = Annotated[Optional[str], typer.Option("--backend", help="optuna | ray | slurm (default: the study file's).")]
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", help="Address of an existing Ray cluster (default: the study file's, RAY_ADDRESS, or a local Ray).")]


def _with_backend(spec, backend: str | None, ray_address: str | None):
    """The study spec with the command line's backend and Ray address applied (checked first)."""
    if backend is not None and backend not in ("optuna", "ray", "slurm"):
        raise CliError(f"--backend: unknown backend {backend!r}; known: optuna, ray, slurm")
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
        from explorer.study import load_study

        # everything is validated before anything is written
        spec = _with_backend(load_study(study_file), backend, ray_address)
        workdir = workdir.resolve()
        uri, artifacts = _tracking(spec, tracking_uri, workdir)
        from explorer.tracking import MlflowTracker

        tracker = MlflowTracker(uri, spec.name, artifact_root=artifacts)
        if uri.startswith(("http://", "https://")):
            tracker.check()  # an unreachable server fails here, before the workdir is touched
        workdir.mkdir(parents=True, exist_ok=True)
        tracker.check()
        storage_url = _storage_url(spec, storage, workdir)
        from explorer.controller import run_study
        from explorer.progress import StudyProgress
        from explorer.storage import open_study

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
        study = _existing_study(spec, storage_url)
        if outcome.finished:
            tracker.on_study_end(study)
        _print_leaderboard(study)
        _print_path(study)
        ui = ["eagle-explore", "ui", "--workdir", str(workdir)] + (["--tracking-uri", uri] if artifacts is None else [])
        typer.echo(f"Open the MLflow UI: {mask(shlex.join(ui))}")
        if not outcome.finished:
            _err_console().print(f"[yellow]study not finished[/yellow]: {outcome.stopped_reason}")
            raise typer.Exit(1)


def _planned(spec) -> int | None:
    """Planned number of trials, when the strategy can tell (for the progress bar and ETA)."""
    try:
        from explorer.strategies import build_strategy

        strategy = build_strategy(spec)
    except Exception:  # noqa: BLE001 -- only a display hint
        return spec.budget.max_trials
    for name in ("total_planned", "planned_trials"):
        value = getattr(strategy, name, None)
        value = value() if callable(value) else value
        if isinstance(value, int):
            return min(value, spec.budget.max_trials or value)
    return spec.budget.max_trials


@app.command()
def worker(study_file: StudyArg,
           storage: Annotated[str, typer.Option("--storage", help="Storage URL of the running study (shared database).")],
           tracking_uri: TrackingOpt = None, workdir: WorkdirOpt = Path("."), backend: BackendOpt = None,
           ray_address: RayAddressOpt = None) -> None:
    """Join a running study from another machine (takes trials from the shared database)."""
    with _guard():
        from explorer.study import load_study

        spec = _with_backend(load_study(study_file), backend, ray_address)
        workdir = workdir.resolve()
        uri, artifacts = _tracking(spec, tracking_uri, workdir)
        from explorer.tracking import MlflowTracker

        tracker = MlflowTracker(uri, spec.name, artifact_root=artifacts)
        remember(storage)
        study = _existing_study(spec, storage)  # joining needs a study that `run` created
        workdir.mkdir(parents=True, exist_ok=True)
        tracker.check()
        from explorer.controller import run_worker
        from explorer.progress import StudyProgress

        try:
            with StudyProgress(study, total=_planned(spec), concurrency=spec.resources.max_concurrent_trials) as progress, \
                    _sigterm_stops():
                outcome = run_worker(spec, storage, workdir, tracker=tracker, backend=spec.backend, progress=progress)
        except KeyboardInterrupt:
            _err_console().print("[yellow]interrupted[/yellow]: run the same command to resume")
            raise typer.Exit(130) from None
        typer.echo(f"worker done: {outcome.n_complete} of {outcome.n_trials} trials complete"
                   f"{'' if outcome.finished else f' (stopped: {outcome.stopped_reason})'}")


@app.command()
def status(study_file: StudyArg, storage: StorageOpt = None, workdir: WorkdirOpt = Path("."),
           as_json: Annotated[bool, typer.Option("--json", help="One JSON document with every trial.")] = False) -> None:
    """Every trial of a study: state, params, value, round, candidate, MLflow run."""
    with _guard():
        from explorer.report import status_json

        _, study = _load(study_file, storage, workdir)
        doc = status_json(study)
        if as_json:
            typer.echo(json.dumps(doc, indent=2, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{doc['study']}: " + ", ".join(f"{k.lower()} {v}" for k, v in doc["states"].items()))
        for col in ("#", "state", "experts", "value", "round", "candidate", "MLflow run"):
            table.add_column(col)
        for t in doc["trials"]:
            table.add_row(str(t["number"]), t["state"], t["experts"], "" if t["value"] is None else f"{t['value']:.4g}",
                          "" if t["round"] is None else str(t["round"]), t["candidate"] or "", t["mlflow_run_id"] or "")
        Console().print(table)


@app.command("leaderboard")
def leaderboard_cmd(study_file: StudyArg, storage: StorageOpt = None, workdir: WorkdirOpt = Path("."),
                    top: Annotated[Optional[int], typer.Option("--top", min=1, help="Show the best N only.")] = None) -> None:
    """Completed configurations ranked by the objective (seed repeats averaged), and the greedy path."""
    with _guard():
        _, study = _load(study_file, storage, workdir)
        _print_leaderboard(study, top)
        _print_path(study)


@app.command()
def export(study_file: StudyArg, storage: StorageOpt = None, workdir: WorkdirOpt = Path("."),
           fmt: Annotated[str, typer.Option("--format", "-f", help="markdown | csv")] = "markdown",
           out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here instead of stdout.")] = None) -> None:
    """The study as a paper-style table: #Enc, expert letters, per-benchmark columns, Avg."""
    with _guard():
        from explorer.report import EXPORT_FORMATS, export as export_table

        if fmt not in EXPORT_FORMATS:
            raise CliError(f"--format: unknown format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
        _, study = _load(study_file, storage, workdir)
        text = export_table(study, fmt)
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            _err_console().print(f"wrote {out}")


@app.command()
def ui(study_file: Annotated[Optional[Path], typer.Argument(help="Study file (for its tracking URI).")] = None,
       tracking_uri: TrackingOpt = None, workdir: WorkdirOpt = Path("."),
       port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5000,
       dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command, start nothing.")] = False) -> None:
    """Start the MLflow UI on the study's tracking store (localhost only)."""
    with _guard():
        spec = None
        if study_file is not None:
            from explorer.study import load_study

            spec = load_study(study_file)
        uri, artifacts = _tracking(spec, tracking_uri, workdir.resolve())
        if uri.startswith(("http://", "https://")):
            typer.echo(f"MLflow UI: {uri} (a tracking server is already serving it)")
            return
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file() and not dry_run:
            raise CliError(f"no MLflow store at {uri[len('sqlite:///'):]} (run a study first, or pass --workdir)")
        cmd = _ui_command(uri, artifacts, port)
        typer.echo(f"MLflow UI: http://127.0.0.1:{port}")
        if dry_run:
            typer.echo(shlex.join(cmd))
            return
        sys.stdout.flush()
        os.execv(cmd[0], cmd)  # the UI replaces this process: Ctrl-C and signals reach it directly


@app.command()
def trial(trial_file: Annotated[Path, typer.Argument(help="Trial spec (YAML).")],
          out: Annotated[Path, typer.Option("--out", help="Trial directory (relative: under --workdir).")],
          nproc: Annotated[int, typer.Option("--nproc", min=1, help="Processes (ranks) for torchrun.")] = 1,
          workdir: WorkdirOpt = Path("."),
          restart: Annotated[bool, typer.Option(
              "--restart", help="Start over if OUT holds progress of another spec (it moves aside).")] = False) -> None:
    """Run one trial on this machine (torchrun; DeepSpeed when the spec says so). Run it again on
    the same OUT to continue from its last checkpoint; SIGTERM makes it checkpoint and stop."""
    with _guard():
        from trainers.launch import TrialFailed, TrialPreempted, run_trial
        from trainers.preempt import PREEMPT_EXIT

        out_dir = out if out.is_absolute() else workdir.resolve() / out
        try:
            result = run_trial(trial_file, out_dir, nproc, restart=restart)
        except TrialPreempted as err:
            _err_console().print(f"[yellow]stopped:[/yellow] {_one_line(err)}")
            raise typer.Exit(PREEMPT_EXIT) from None
        except TrialFailed as err:
            _err_console().print(f"[red]trial failed:[/red] {_one_line(err)} (logs: {out_dir / 'logs'})")
            raise typer.Exit(1) from None
        _print_result(result, out_dir)


def _print_result(result: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    profile = f" (scorer profile {result['scorer_profile']})" if result.get("scorer_profile") else ""
    table = Table(title=f"{out_dir}: {result.get('objective_name', 'objective')} = {result.get('objective')}{profile}")
    table.add_column("benchmark")
    table.add_column("score")
    for bench, score in (result.get("scores") or {}).items():
        if "/" in bench:  # sub-figures (pope/random/f1) are in result.json
            continue
        table.add_row(bench, f"{score:.4g}" if isinstance(score, (int, float)) else str(score))
    Console().print(table)


@app.command("eval")
def eval_cmd(checkpoint: Annotated[Path, typer.Argument(help="Trial directory or saved model directory.")],
             benchmarks: Annotated[str, typer.Option("--benchmarks", help="Comma-separated benchmark names.")],
             limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Items per benchmark (slim subsets).")] = None,
             data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Real benchmark copies (default: the synthetic suite).")] = None,
             out: Annotated[Optional[Path], typer.Option("--out", help="Predictions and scores (default: <trial dir>/eval).")] = None,
             nproc: Annotated[int, typer.Option("--nproc", min=1, help="Evaluation processes (shards).")] = 1,
             profile: Annotated[Optional[str], typer.Option(
                 "--profile", help="Scoring rules: official | lmms_eval (default: the trial's eval.scorer_profile).")] = None,
             workdir: WorkdirOpt = Path(".")) -> None:
    """Evaluate a trained checkpoint on benchmarks."""
    with _guard():
        from trainers.eval.base import SCORER_PROFILES
        from trainers.eval.cli import run_eval

        if profile is not None and profile not in SCORER_PROFILES:
            raise CliError(f"--profile: unknown scorer profile {profile!r}; known: {', '.join(SCORER_PROFILES)}")
        names = [b.strip() for b in benchmarks.split(",") if b.strip()]
        if not names:
            raise CliError("--benchmarks: give at least one benchmark name")
        base = workdir.resolve()
        ckpt = checkpoint if checkpoint.is_absolute() else base / checkpoint
        out_dir = None if out is None else (out if out.is_absolute() else base / out)
        try:
            result = run_eval(ckpt, names, limit=limit, data_root=data_root, out_dir=out_dir, nproc=nproc,
                              profile=profile)
        except (FileNotFoundError, ValueError) as err:  # bad checkpoint, limit or benchmark name
            raise CliError(_one_line(err)) from None
        _print_result(result, out_dir or ckpt)


from explorer.cli_experts import experts_cmd  # noqa: E402  (its own module; registered here)

app.command("experts")(experts_cmd)

if __name__ == "__main__":  # pragma: no cover
    app()
