"""The CLI's shared options and its error guard: expected errors (bad input, unreachable service)
end as one red line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from explorer.redact import mask

logger = logging.getLogger("explorer.cli.main")

EXIT_USAGE = 2
WorkdirOpt = Annotated[Path, typer.Option("--workdir", "-w", help="Work directory: study database, MLflow store, trial directories.")]
StorageOpt = Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default: the study file's, else sqlite in the workdir).")]
TrackingOpt = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: the study file's, else sqlite in the workdir).")]
StudyArg = Annotated[Path, typer.Argument(help="Study file (YAML).")]


class CliError(RuntimeError):
    """A user-facing problem found by the CLI itself."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Error classes that mean 'bad input or unreachable service' (only modules already imported
    can have raised theirs, so nothing heavy is imported here)."""
    found: list[type[BaseException]] = [CliError]
    for module, names in (("explorer.study.spec", ("StudyError",)), ("trainers.spec", ("SpecError",)),
                          ("search_spaces.loader", ("SearchSpaceError",)), ("explorer.tracking.tracker", ("TrackingError",)),
                          ("explorer.study.storage", ("StorageError",)), ("explorer.reach", ("PreflightError",)),
                          ("explorer.report.leaderboard", ("ReportError",)), ("sqlalchemy.exc", ("SQLAlchemyError",)),
                          ("optuna.exceptions", ("StorageInternalError", "DuplicatedStudyError")),
                          ("experts.registry", ("UnknownNameError",)), ("trainers.eval", ("UnknownBenchmarkError", "BenchmarkDataError"))):
        mod = sys.modules.get(module)
        found += [getattr(mod, n) for n in names if mod is not None and isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def err_console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if "sqlalchemy" in type(err).__module__:
        text = f"study storage: {text}"
    return mask(text.splitlines()[0])


@contextlib.contextmanager
def guard() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 -- filtered just below
        if not isinstance(err, expected_errors()):
            raise
        from rich.markup import escape

        logger.debug("expected error", exc_info=True)
        err_console().print(f"[red]error:[/red] {escape(one_line(err))}")
        raise typer.Exit(EXIT_USAGE) from None
