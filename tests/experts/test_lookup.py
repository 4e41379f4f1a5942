"""experts.lookup.Registry: every extension point's name table (families, fusions, benchmarks,
engines, strategies, backends) fails loudly with the known names and loads lazily."""
from __future__ import annotations

import pytest

import experts
from experts.errors import UnknownNameError
from experts.lookup import Registry


def test_lookup_registers_and_names_the_known_on_a_miss():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg["a"] == 1 and reg.get("b") is b and list(reg) == ["a", "b"] and "a" in reg
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a", 3)


def test_the_loader_runs_once_on_first_lookup():
    calls = []
    reg: Registry[str] = Registry("thing", loader=lambda: (calls.append(1), reg.register("x", "X")))
    assert calls == []
    assert reg["x"] == "X" and reg.names() == ["x"] and calls == [1]


def test_expert_families_and_fusions_are_registries():
    with pytest.raises(UnknownNameError, match="unknown expert family 'vit9'; known: .*clip"):
        experts.get_family("vit9")
    with pytest.raises(UnknownNameError, match="unknown fusion 'nope'; known: channel_concat, deformable"):
        experts.build_fusion("nope", [8], 4)
    assert set(experts.FUSIONS) == {"sequence_append", "channel_concat", "llava_hr", "mini_gemini", "deformable", "sva"}
