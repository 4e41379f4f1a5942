"""Declarative YAML search spaces (expert catalogue A-F, fusion, resolution, freeze,
hyper-parameters) and their loader."""
from search_spaces.loader import (
    ExpertChoice,
    FreezeSetting,
    FusionChoice,
    HParamRange,
    ResolutionRecipe,
    SearchSpace,
    SearchSpaceError,
    load_search_space,
    parse_search_space,
)

__all__ = [
    "ExpertChoice", "FreezeSetting", "FusionChoice", "HParamRange", "ResolutionRecipe",
    "SearchSpace", "SearchSpaceError", "load_search_space", "parse_search_space",
]
