"""The read-only study commands: status, leaderboard, export, ui, report (and the study loading they
share with `run` and `worker`, which are in explorer/cli/main.py)."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from explorer.cli.errors import (
    CliError,
    StorageOpt,
    StudyArg,
    TrackingOpt,
    WorkdirOpt,
    err_console,
    guard,
)
from explorer.redact import mask


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command("leaderboard")(leaderboard_cmd)
    app.command()(export)
    app.command()(ui)
    app.command("report")(report_cmd)


def existing_study(spec, storage_url: str):
    """Load a study for reading; never creates a database or a study."""
    import optuna

    if storage_url.startswith("sqlite:///"):
        db = Path(storage_url[len("sqlite:///"):])
        if not db.is_file():
            raise CliError(f"no study database at {db} (run `eagle-explore run` first, or pass --storage/--workdir)")
    from explorer.study.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(spec, storage_url)  # unreachable or unsupported: StorageError, one line
    try:
        return optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        raise CliError(f"study {spec.name!r} not found in {mask(storage_url)}") from None


def load_for_reading(study_file: Path, storage: str | None, workdir: Path):
    from explorer.preflight import storage_url_for
    from explorer.study.load import load_study
    spec = load_study(study_file)
    return spec, existing_study(spec, storage_url_for(spec, storage, workdir.resolve()))


def ui_command(tracking_uri: str, artifact_root: str | None, port: int, workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if artifact_root:
        cmd += ["--default-artifact-root", artifact_root]
    return cmd


def print_leaderboard(study, limit: int | None = None, workdir: Path | None = None) -> None:
    from rich.console import Console

    from explorer.study.ledger import ledger_lines
    from explorer.report.artifacts import study_cost
    from explorer.cli.terminal import leaderboard_table

    Console().print(leaderboard_table(study, limit))
    ledger = study_cost(study, workdir)
    if ledger["recorded"]:  # the footer: what the study cost and saved
        typer.echo("\n".join(ledger_lines(ledger)))


def print_path(study) -> None:
    from rich.console import Console

    from explorer.report.leaderboard import expectation, format_path, greedy_path
    from explorer.study.expectation import summary_line

    path = greedy_path(study)
    if path:
        from rich.markup import escape

        Console(soft_wrap=True).print(f"[bold]Greedy path:[/bold] {escape(format_path(path))}")
    if line := summary_line(expectation(study, path)):
        typer.echo(line[0].upper() + line[1:] + ".")


def status(study_file: StudyArg, storage: StorageOpt = None, workdir: WorkdirOpt = Path("."),
           as_json: Annotated[bool, typer.Option("--json", help="One JSON document with every trial.")] = False) -> None:
    """Every trial of a study: state, params, value, round, candidate, MLflow run."""
    with guard():
        from explorer.report.leaderboard import status_json

        _, study = load_for_reading(study_file, storage, workdir)
        doc = status_json(study)
        if as_json:
            typer.echo(json.dumps(doc, indent=2, default=str))
            return
        from rich.console import Console

        from explorer.cli.terminal import status_table

        Console().print(status_table(doc))


def leaderboard_cmd(study_file: StudyArg, storage: StorageOpt = None, workdir: WorkdirOpt = Path("."),
                    top: Annotated[Optional[int], typer.Option("--top", min=1, help="Show the best N only.")] = None) -> None:
    """Completed configurations ranked by the objective (seed repeats averaged), and the greedy path."""
    with guard():
        _, study = load_for_reading(study_file, storage, workdir)
        print_leaderboard(study, top, workdir)
        print_path(study)


def export(study_file: StudyArg, storage: StorageOpt = None, workdir: WorkdirOpt = Path("."),
           fmt: Annotated[str, typer.Option("--format", "-f", help="markdown | csv")] = "markdown",
           out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here instead of stdout.")] = None) -> None:
    """The study as a paper-style table: #Enc, expert letters, per-benchmark columns, Avg."""
    with guard():
        from explorer.report.paper_table import EXPORT_FORMATS
        from explorer.report.paper_table import export as export_table

        if fmt not in EXPORT_FORMATS:
            raise CliError(f"--format: unknown format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
        _, study = load_for_reading(study_file, storage, workdir)
        text = export_table(study, fmt)
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            err_console().print(f"wrote {out}")


def ui(study_file: Annotated[Optional[Path], typer.Argument(help="Study file (for its tracking URI).")] = None,
       tracking_uri: TrackingOpt = None, workdir: WorkdirOpt = Path("."),
       port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5000,
       workers: Annotated[int, typer.Option("--workers", min=1, help="MLflow UI server processes (more for many users).")] = 1,
       dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command, start nothing.")] = False) -> None:
    """Start the MLflow UI on the study's tracking store (localhost only)."""
    with guard():
        spec = None
        if study_file is not None:
            from explorer.study.load import load_study
            spec = load_study(study_file)
        from explorer.preflight import tracking_for

        uri, artifacts = tracking_for(spec, tracking_uri, workdir.resolve())
        if uri.startswith(("http://", "https://")):
            typer.echo(f"MLflow UI: {uri} (a tracking server is already serving it)")
            return
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file() and not dry_run:
            raise CliError(f"no MLflow store at {uri[len('sqlite:///'):]} (run a study first, or pass --workdir)")
        from explorer.tracking.store import reroot, ui_environment

        if artifacts is not None and not dry_run:
            reroot(workdir)  # the work directory's own store: find its artifacts where it is now
        cmd = ui_command(uri, artifacts, port, workers)
        typer.echo(f"MLflow UI: {study_url(spec, uri, port) if spec is not None and not dry_run else f'http://127.0.0.1:{port}'}")
        if dry_run:
            typer.echo(shlex.join(cmd))
            return
        sys.stdout.flush()
        # the UI replaces this process: Ctrl-C and signals reach it directly
        os.execve(cmd[0], cmd, ui_environment())


def report_cmd(study_file: StudyArg, storage: StorageOpt = None, tracking_uri: TrackingOpt = None,
               workdir: WorkdirOpt = Path(".")) -> None:
    """Rewrite the study's report (tables, plots) in the workdir and in its MLflow parent run."""
    with guard():
        spec, study = load_for_reading(study_file, storage, workdir)
        from explorer.report.artifacts import report_dir, write_report
        from explorer.tracking.tracker import MlflowTracker
        from explorer.study.attrs import STUDY_RUN_ATTR
        workdir = workdir.resolve()
        from explorer.preflight import tracking_for

        uri, artifacts = tracking_for(spec, tracking_uri, workdir)
        if STUDY_RUN_ATTR in study.user_attrs:  # the study was tracked: its parent run gets them too
            tracker = MlflowTracker(uri, spec.name, artifact_root=artifacts, spec=spec, workdir=workdir)
            files = tracker.refresh_report(study)
        else:
            files = write_report(study, spec, workdir, report_dir(workdir, spec.name))
        for path in files:
            typer.echo(str(path))
        from explorer.study.ledger import ledger_lines

        for line in ledger_lines(json.loads((report_dir(workdir, spec.name) / "cost.json").read_text())):
            typer.echo(line)


def study_url(spec, uri: str, port: int) -> str:
    """The study's runs table (model-training mode, objective first), or the UI's home page."""
    from mlflow.tracking import MlflowClient

    from explorer.tracking.store import experiment_url

    base = f"http://127.0.0.1:{port}"
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(spec.name)
    return experiment_url(base, exp.experiment_id) if exp is not None else base
