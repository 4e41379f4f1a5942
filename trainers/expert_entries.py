"""A trial's expert entry (trainers.spec.ExpertEntry) -> its validated experts.ExpertConfig."""
from __future__ import annotations


def resolve_expert(entry):
    """One trial expert entry -> its validated ExpertConfig (preset + the entry's overrides)."""
    import experts

    base = (experts.ExpertConfig.declared({"name": entry.preset, **entry.define}) if entry.define
            else experts.get_preset(entry.preset))
    return base.with_overrides(
        source=entry.source, pretrained=entry.pretrained, input_size=entry.input_size, grid=entry.grid,
        highres=entry.highres, max_tiles=entry.max_tiles, freeze=entry.freeze, grad_checkpointing=entry.grad_checkpointing)
