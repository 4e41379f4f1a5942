"""`eagle-explore experts`: the catalogue with sizes counted on the meta device."""
from __future__ import annotations

import json

from typer.testing import CliRunner

import experts
from explorer.cli.main import app


def test_experts_json_lists_every_preset_with_its_size():
    res = CliRunner().invoke(app, ["experts", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["preset"]: r for r in json.loads(res.stdout)["experts"]}
    assert set(rows) == set(experts.PRESETS)
    clip = rows["clip-l-448"]
    assert (clip["letter"], clip["family"], clip["source"], clip["input"], clip["native"]) == (
        "A", "clip", "openai/clip-vit-large-patch14-336", 448, 336)
    assert (clip["tokens"], clip["width"]) == (1024, 1024) and 300e6 < clip["params"] < 310e6  # ViT-L/14
    radio = rows["c-radio-v3-l-512"]
    assert (radio["letter"], radio["family"], radio["tokens"]) == ("K", "timm", 1024)
    assert rows["tiny-siglip2"]["source"] is None and rows["tiny-siglip2"]["params"] < 1e5


def test_experts_table_names_the_new_families(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    res = CliRunner().invoke(app, ["experts"])
    assert res.exit_code == 0, res.output
    assert "siglip2-so400m-512" in res.stdout and "hf_vision" in res.stdout and "428.8M" in res.stdout
