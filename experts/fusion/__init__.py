"""The five fusion strategies compared in the Eagle paper (arXiv 2408.15998) and Cambrian-1's
Spatial Vision Aggregator, one module each."""
from __future__ import annotations

from experts.lookup import Registry

from .base import Fusion, FusionError, FusionOptions, fusion_cost
from .channel_concat import ChannelConcat
from .deformable import Deformable, ms_deform_sample
from .llava_hr import LlavaHR
from .mini_gemini import MiniGemini
from .sequence_append import SequenceAppend
from .sva import SpatialVisionAggregator

FUSIONS: Registry[type[Fusion]] = Registry("fusion")
for _cls in (SequenceAppend, ChannelConcat, LlavaHR, MiniGemini, Deformable, SpatialVisionAggregator):
    FUSIONS.register(_cls.name, _cls)

__all__ = [
    "FUSIONS",
    "ChannelConcat",
    "Deformable",
    "Fusion",
    "FusionError",
    "FusionOptions",
    "LlavaHR",
    "MiniGemini",
    "SequenceAppend",
    "SpatialVisionAggregator",
    "fusion_cost",
    "ms_deform_sample",
]
