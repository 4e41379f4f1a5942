"""The five fusion strategies compared in the Eagle paper (arXiv 2408.15998), one module each."""
from __future__ import annotations

from .base import Fusion, FusionError, FusionOptions, fusion_cost
from .channel_concat import ChannelConcat
from .deformable import Deformable, ms_deform_sample
from .llava_hr import LlavaHR
from .mini_gemini import MiniGemini
from .sequence_append import SequenceAppend

FUSIONS: dict[str, type[Fusion]] = {
    cls.name: cls for cls in (SequenceAppend, ChannelConcat, LlavaHR, MiniGemini, Deformable)
}

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
    "fusion_cost",
    "ms_deform_sample",
]
