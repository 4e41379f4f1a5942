"""`eagle-explore trial`, `eval` and `export-model`: one trial, one evaluation of a checkpoint, or a
trained trial exported as a model directory, on this machine (the study commands are in
explorer/cli/main.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from explorer.cli.errors import CliError, WorkdirOpt, err_console, guard, one_line


def register(app: typer.Typer) -> None:
    app.command()(trial)
    app.command("eval")(eval_cmd)
    app.command("export-model")(export_model_cmd)


def trial(trial_file: Annotated[Path, typer.Argument(help="Trial spec (YAML).")],
          out: Annotated[Path, typer.Option("--out", help="Trial directory (relative: under --workdir).")],
          nproc: Annotated[int, typer.Option("--nproc", min=1, help="Processes (ranks) for torchrun.")] = 1,
          workdir: WorkdirOpt = Path("."),
          restart: Annotated[bool, typer.Option(
              "--restart", help="Start over if OUT holds progress of another spec (it moves aside).")] = False) -> None:
    """Run one trial on this machine (torchrun; DeepSpeed when the spec says so). Run it again on
    the same OUT to continue from its last checkpoint; SIGTERM makes it checkpoint and stop. Under
    `srun` with one task per node, the tasks run one trial on all the nodes (docs/slurm.md)."""
    with guard():
        from explorer.preflight import preflight
        from trainers.launch import TrialFailed, TrialPreempted, run_trial
        from trainers.training.preempt import PREEMPT_EXIT

        preflight(trial_file, nproc=nproc, services=False, expect="trial")
        out_dir = out if out.is_absolute() else workdir.resolve() / out
        try:
            result = run_trial(trial_file, out_dir, nproc, restart=restart)
        except TrialPreempted as err:
            err_console().print(f"[yellow]stopped:[/yellow] {one_line(err)}")
            raise typer.Exit(PREEMPT_EXIT) from None
        except TrialFailed as err:
            err_console().print(f"[red]trial failed:[/red] {one_line(err)} (logs: {out_dir / 'logs'})")
            raise typer.Exit(1) from None
        if result is None:  # node k > 0 of a multi-node trial (srun): node 0 reports it
            err_console().print(f"this node's ranks of {out_dir} finished; node 0 prints the result")
            return
        _print_result(result, out_dir)


def _print_result(result: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from explorer.report.scales import column, fmt, fmt_ci, label, objective_label, result_harness

    name = objective_label(result.get("objective_name"), result_harness(result))
    ci = f" ({fmt_ci(result['objective_ci'])})" if result.get("objective_ci") else ""
    profile = f" (scorer profile {result['scorer_profile']})" if result.get("scorer_profile") else ""
    table = Table(title=f"{out_dir}: {name} = {fmt(result.get('objective'))}{ci}{profile}")
    cis, blind = result.get("scores_ci") or {}, result.get("blind_scores") or {}
    for col in ("benchmark", "score", "95% CI", *(["blind"] if blind else [])):
        table.add_column(col)
    for bench, score in (result.get("scores") or {}).items():
        if "/" in bench:  # sub-figures (pope/random/f1) are in result.json
            continue
        table.add_row(label(column(bench)), fmt(score), fmt_ci(cis.get(bench)),
                      *([fmt(blind.get(bench))] if blind else []))
    Console().print(table)


def eval_cmd(checkpoint: Annotated[Path, typer.Argument(help="Trial directory or saved model directory.")],
             benchmarks: Annotated[Optional[str], typer.Option("--benchmarks", help="Comma-separated benchmark names.")] = None,
             harness: Annotated[str, typer.Option("--harness", help="builtin (the project's scorers) | lmms-eval.")] = "builtin",
             tasks: Annotated[Optional[str], typer.Option("--tasks", help="lmms-eval task names (--harness lmms-eval).")] = None,
             include_path: Annotated[Optional[Path], typer.Option(
                 "--include-path", help="A folder of your own lmms-eval task files (lmms-eval's are found without it).")] = None,
             limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Items per benchmark (slim subsets).")] = None,
             data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Real benchmark copies (default: the synthetic suite).")] = None,
             out: Annotated[Optional[Path], typer.Option("--out", help="Predictions and scores (default: <trial dir>/eval).")] = None,
             nproc: Annotated[int, typer.Option("--nproc", min=1, help="Evaluation processes (shards).")] = 1,
             profile: Annotated[Optional[str], typer.Option(
                 "--profile", help="Scoring rules: official | lmms_eval (default: the trial's eval.scorer_profile).")] = None,
             no_mlflow: Annotated[bool, typer.Option(
                 "--no-mlflow", help="Do not log the results to the trial's MLflow run.")] = False,
             workdir: WorkdirOpt = Path(".")) -> None:
    """Evaluate a trained checkpoint on benchmarks (the project's scorers) or on lmms-eval tasks;
    a trial of a study in --workdir gets the results in its MLflow run (eval/<harness>/...)."""
    with guard():
        from trainers.eval.base import SCORER_PROFILES
        from trainers.eval.cli import RESULT_FILE, run_eval
        from trainers.eval.lmms_harness import HARNESSES

        if harness not in HARNESSES:
            raise CliError(f"--harness: unknown harness {harness!r}; known: {', '.join(HARNESSES)}")
        if harness == "lmms-eval":
            return _lmms_eval(checkpoint, tasks, limit, include_path, out, workdir, not no_mlflow)
        if benchmarks is None:
            raise CliError("--benchmarks: give at least one benchmark name")
        if profile is not None and profile not in SCORER_PROFILES:
            raise CliError(f"--profile: unknown scorer profile {profile!r}; known: {', '.join(SCORER_PROFILES)}")
        names = [b.strip() for b in benchmarks.split(",") if b.strip()]
        if not names:
            raise CliError("--benchmarks: give at least one benchmark name")
        base = workdir.resolve()
        ckpt = checkpoint if checkpoint.is_absolute() else base / checkpoint
        out_dir = None if out is None else (out if out.is_absolute() else base / out)
        from explorer.preflight import preflight_eval

        preflight_eval(ckpt, names, limit=limit, data_root=data_root)
        try:
            trial_dir, eval_dir = _eval_dirs(ckpt, out_dir)
            result = run_eval(ckpt, names, limit=limit, data_root=data_root, out_dir=eval_dir, nproc=nproc,
                              profile=profile)
        except (FileNotFoundError, ValueError) as err:  # bad checkpoint, limit or benchmark name
            raise CliError(one_line(err)) from None
        _print_result(result, out_dir or ckpt)
        if not no_mlflow:
            from trainers import trial_dir as TD

            scores = {**result["scores"], "objective": result.get("objective")}
            _log_to_mlflow(workdir, trial_dir, eval_dir, harness, scores,
                           [eval_dir / RESULT_FILE, eval_dir / TD.PREDICTIONS])


def _eval_dirs(ckpt: Path, out_dir: Optional[Path]) -> tuple[Path, Path]:
    """(trial dir, output dir) of an evaluation; the output as both harnesses default it."""
    from trainers.eval.cli import resolve_checkpoint

    trial_dir = resolve_checkpoint(ckpt)[1].parent
    return trial_dir, out_dir or trial_dir / "eval"


def _log_to_mlflow(workdir: Path, trial_dir: Path, eval_dir: Path, harness: str, scores: dict,
                   files: list[Path]) -> None:
    """The results into the trial's MLflow run, if its study has one in --workdir (else one info line)."""
    from explorer.tracking.eval_run import log_eval
    from explorer.tracking.store import default_tracking_uri

    try:
        run_id = log_eval(default_tracking_uri(workdir), workdir, trial_dir, harness, scores, files)
    except Exception as err:  # noqa: BLE001 -- any store failure is one line; the results are written
        raise CliError(f"MLflow: results (in {eval_dir}) not logged: {one_line(err)}") from None
    if run_id is not None:
        err_console().print(f"logged to MLflow run {run_id}")


def _lmms_eval(checkpoint: Path, tasks: Optional[str], limit: Optional[int], include_path: Optional[Path],
               out: Optional[Path], workdir: Path, mlflow: bool) -> None:
    from rich.console import Console

    from trainers.eval.lmms_harness import OUT_SUBDIR, HarnessError, run_lmms_eval

    base = workdir.resolve()
    ckpt = checkpoint if checkpoint.is_absolute() else base / checkpoint
    out_dir = None if out is None else (out if out.is_absolute() else base / out)
    names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    try:
        trial_dir, eval_dir = _eval_dirs(ckpt, out_dir)
        res = run_lmms_eval(ckpt, names, limit=limit, include_path=include_path, out_dir=eval_dir)
    except (HarnessError, FileNotFoundError) as err:
        raise CliError(one_line(err)) from None
    for key, value in res["scores"].items():
        Console().print(f"{key}: {value:.4f}")
    if mlflow:
        written = eval_dir / OUT_SUBDIR
        _log_to_mlflow(workdir, trial_dir, written, "lmms-eval", res["scores"],
                       [written / "results.json", *sorted(written.glob("samples_*.jsonl"))])


def export_model_cmd(trial_dir: Annotated[Path, typer.Argument(help="Finished trial directory (or its saved model).")],
                     out: Annotated[Path, typer.Argument(help="New directory for the exported model.")],
                     workdir: WorkdirOpt = Path(".")) -> None:
    """Export a trained trial as a self-contained model directory (safetensors weights, configs,
    tokenizer and chat template, a model card): `load_exported(OUT)` from trainers.modeling.export
    loads it for inference outside a study."""
    with guard():
        from trainers.modeling.export import ExportError, export_model

        base = workdir.resolve()
        src = trial_dir if trial_dir.is_absolute() else base / trial_dir
        dst = out if out.is_absolute() else base / out
        try:
            written = export_model(src, dst)
        except ExportError as err:
            raise CliError(one_line(err)) from None
        err_console().print(f"exported {src} -> {written} (load: trainers.modeling.export.load_exported)")
