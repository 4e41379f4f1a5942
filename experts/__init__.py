"""Vision experts (one module per family), grid alignment, high-res adaptation, mixture, registry.

Names load on first use (PEP 562), so light modules (experts.config, experts.errors, experts.lookup)
import without torch."""
from __future__ import annotations

import importlib

_HOME = {
    "VisionExpert": "experts.base", "ExpertConfig": "experts.config",
    **{n: "experts.errors" for n in ("ExpertConfigError", "ExpertInputError", "ExpertLoadError", "UnknownNameError")},
    **{n: "experts.mixture" for n in ("VisionMixture", "build_mixture")},
    **{n: "experts.presets" for n in ("FULL_PRESETS", "LETTERS", "PRESETS", "TINY_PRESETS")},
    **{n: "experts.registry" for n in ("EXPERT_FAMILIES", "build_expert", "build_fusion", "get_family", "get_preset",
                                       "load_expert")},
    "FUSIONS": "experts.fusion",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'experts' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
