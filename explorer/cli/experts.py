"""`eagle-explore experts [--json]`: the expert catalogue (every preset with family, letter,
source, resolution, tokens, width and parameter count), built on the meta device: no download."""
from __future__ import annotations

import json
import sys
from typing import Annotated

import typer


def _size(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def experts_cmd(as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of a table.")] = False,
                ) -> None:
    """List every expert preset (sizes counted on the meta device, nothing downloaded)."""
    from experts.describe import describe_all

    rows = describe_all()
    if as_json:
        sys.stdout.write(json.dumps({"experts": rows}, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} expert presets")
    for col in ("preset", "letter", "family", "source", "input/native", "tokens", "width", "params"):
        table.add_column(col, no_wrap=col in ("preset", "source"),
                         justify="right" if col in ("tokens", "width", "params") else "left")
    for r in rows:
        res = f"{r['input']}/{r['native']}" if r["input"] != r["native"] else str(r["input"])
        table.add_row(r["preset"], r["letter"] or "", r["family"], r["source"] or "-", res,
                      str(r["tokens"]), str(r["width"]), _size(r["params"]))
    Console(soft_wrap=True).print(table)
