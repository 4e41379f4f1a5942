"""`eagle-explore plan STUDY.yaml|TRIAL.yaml`: per trial and stage, parameters, FLOPs per sample,
peak memory per GPU and GPU-hours, and the study's total with and without the stage-1 cache."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from explorer.cli.errors import CliError, guard


def _samples(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        name, _, n = v.partition("=")
        if name not in ("pretrain", "sft") or not n.isdigit() or int(n) <= 0:
            raise CliError(f"--samples: expected pretrain=N or sft=N (N > 0), got {v!r}")
        out[name] = int(n)
    return out


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)


def plan_cmd(target: Annotated[Path, typer.Argument(help="Study file or trial file (YAML).")],
             gpus: Annotated[Optional[int], typer.Option("--gpus", min=1, help="GPUs per trial (default: the study's nproc_per_trial, 1 for a trial file).")] = None,
             gpu_memory_gb: Annotated[Optional[float], typer.Option("--gpu-memory-gb", min=0.001, help="Flag stages estimated over this (default: the study's resources.gpu_memory_gb).")] = None,
             mfu: Annotated[float, typer.Option("--mfu", min=0.001, max=1.0, help="Model FLOPs utilisation assumed for GPU-hours.")] = 0.35,
             peak_tflops: Annotated[float, typer.Option("--peak-tflops", min=0.001, help="GPU bf16 dense peak (989: H100 SXM / H200; 312: A100).")] = 989.0,
             samples: Annotated[Optional[list[str]], typer.Option("--samples", help="Dataset records: pretrain=N, sft=N (default: count the files).")] = None,
             caption_tokens: Annotated[int, typer.Option("--caption-tokens", min=1, help="Text tokens of a pre-training sample.")] = 64,
             sft_tokens: Annotated[int, typer.Option("--sft-tokens", min=1, help="Text tokens of an SFT sample.")] = 512,
             as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False) -> None:
    """Before anything runs: what each trial costs and whether it fits on the GPUs. The file is
    pre-flighted first as `check --offline` does: data not staged yet is a notice."""
    with guard():
        from explorer.plan import plan_study, plan_trial
        from explorer.preflight import CheckedStudy, not_staged_line, preflight
        from trainers.estimate.arch_profiles import default_cache_path
        from trainers.estimate.cost import Assumptions

        checked = preflight(target, nproc=gpus, services=False, staged=False)  # before the cache is written
        study, trial = (checked.spec, None) if isinstance(checked, CheckedStudy) else (None, checked.spec)
        if not_staged_line(checked):
            typer.echo(not_staged_line(checked), err=True)
        n = gpus or (study.resources.nproc_per_trial if study is not None else 1)
        a = Assumptions(gpus=n, mfu=mfu, peak_tflops=peak_tflops, caption_tokens=caption_tokens,
                        sft_tokens=sft_tokens, samples=_samples(samples or []))
        cache = default_cache_path()
        doc = plan_study(study, a, cache) if study is not None else plan_trial(trial, a, str(target), cache)
        limit = gpu_memory_gb or (study.resources.gpu_memory_gb if study is not None else None)
        doc["gpu_memory_gb"] = limit
        doc["not_staged"] = list(checked.not_staged)
        if as_json:
            typer.echo(json.dumps(doc, indent=2))
            return
        _print_plan(doc, limit, target)


def _fmt_hours(h: float | None) -> str:
    return "?" if h is None else (f"{h:,.1f}" if h >= 0.1 else f"{h:.2g}")


def _si(x: float, unit: str = "") -> str:
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:,.1f}{prefix}{unit}"
    return f"{x:.0f}{unit}"


def _print_plan(doc: dict, limit: float | None, target: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    a = doc["assumptions"]
    table = Table(title=f"{target}: plan ({a['gpus_per_trial']} GPU(s) per trial, MFU {a['mfu']:.0%} of "
                        f"{a['peak_tflops']:g} TFLOP/s)")
    for col in ("trial", "stage", "trainable", "frozen", "FLOP/sample", "tokens", "peak GB/GPU", "host GB/node", "GPU-h"):
        table.add_column(col, justify="left" if col in ("trial", "stage") else "right")
    for t in doc["trials"]:
        for i, (stage, s) in enumerate(t["stages"].items()):
            peak = f"{s['peak_memory_gb']:.3g}"
            if limit is not None and s["peak_memory_gb"] > limit:
                peak = f"[red]{peak} > {limit:g}[/red]"
            table.add_row(t["key"] if i == 0 else "", stage, _si(s["trainable_params"]),
                          _si(s["frozen_params"]), _si(s["flops_per_sample"]),
                          str(s["tokens_per_sample"]), peak, f"{s['host_memory_gb_per_node']:.3g}",
                          _fmt_hours(s["gpu_hours"]))
    console = Console(width=max(120, Console().width))
    console.print(table)
    tot = doc["total_gpu_hours"]
    console.print(f"[bold]Total GPU-hours:[/bold] {_fmt_hours(tot['with_cache'])} with the stage-1 cache, "
                  f"{_fmt_hours(tot['without_cache'])} without")
    if tot.get("full_fidelity"):
        full = tot["full_fidelity"]
        console.print(f"[bold]Multi-fidelity:[/bold] {_fmt_hours(tot['with_cache'])} with rungs vs "
                      f"{_fmt_hours(full['with_cache'])} at full fidelity, both with the cache: "
                      f"{tot.get('ratio_fidelity_alone')} of it; vs {_fmt_hours(full['without_cache'])} naive "
                      f"(full fidelity, no cache): {tot.get('ratio_to_naive')}")
    for note in doc["notes"]:
        console.print(f"[dim]{note}[/dim]")
