"""Vision experts (one module per family), grid alignment, high-res adaptation, mixture, registry."""
from experts.base import VisionExpert
from experts.config import ExpertConfig
from experts.errors import ExpertConfigError, ExpertInputError, ExpertLoadError, UnknownNameError
from experts.mixture import VisionMixture, build_mixture
from experts.presets import FULL_PRESETS, LETTERS, PRESETS, TINY_PRESETS
from experts.registry import (EXPERT_FAMILIES, build_expert, build_fusion, fusions, get_family, get_preset,
                              load_expert)

__all__ = [
    "EXPERT_FAMILIES", "FULL_PRESETS", "LETTERS", "PRESETS", "TINY_PRESETS", "ExpertConfig", "ExpertConfigError",
    "ExpertInputError", "ExpertLoadError", "UnknownNameError", "VisionExpert", "VisionMixture", "build_expert",
    "build_fusion", "build_mixture", "fusions", "get_family", "get_preset", "load_expert", "FUSIONS",
]


def __getattr__(name: str):
    if name == "FUSIONS":  # imported lazily: experts.fusion imports nothing from here at load time
        return fusions()
    raise AttributeError(f"module 'experts' has no attribute {name!r}")
