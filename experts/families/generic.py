"""What the two generic families (hf_vision, timm) share: a meta-device dry run of the backbone
that checks it can run at the expert's size and finds the parameters its features never reach
(no weights touched, no compute), and reading mean/std from the source's own preprocessing config."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from experts.config import ExpertConfig
from experts.errors import ExpertConfigError, ExpertLoadError
from experts.loading import _first_line, looks_like_path


def meta_dry_run(name: str, build: Callable[[], nn.Module], run: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 size: int) -> tuple[str, ...]:
    """Build a meta twin, run it forward and backward at `size`; returns the names of parameters that
    get no gradient. A backbone that cannot run at that size (fixed position table) is one error."""
    with torch.device("meta"):
        twin = build()
        twin.train()
        try:
            out = run(twin, torch.zeros(1, 3, size, size))
        except ExpertConfigError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
            raise ExpertConfigError(
                f"expert {name!r}: the backbone cannot run at {size}x{size} ({_first_line(exc)}); its position "
                "embeddings may not interpolate: use its native_size or highres: tiled") from None
        out.float().sum().backward()
    return tuple(n for n, p in twin.named_parameters() if p.grad is None)


class DryRunUnused:
    """Mixin: `unused_prefixes` from the meta dry run (cached), `meta_twin` supplied by the family."""

    def meta_twin(self) -> nn.Module:
        raise NotImplementedError

    def run_backbone(self, backbone: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.run_backbone(self.backbone, pixels)

    def unused_prefixes(self) -> tuple[str, ...]:
        cached = self.__dict__.get("_unused_names")
        if cached is None:
            cached = meta_dry_run(self.config.name, self.meta_twin, self.run_backbone, self.encode_size)
            self.__dict__["_unused_names"] = cached
        return cached


def hf_preprocessor_stats(cfg: ExpertConfig) -> tuple[tuple, tuple] | None:
    """(image_mean, image_std) from `preprocessor_config.json` at the source, None when it has none."""
    src = cfg.source
    if looks_like_path(src):
        path = Path(src).expanduser() / "preprocessor_config.json"
        if not path.is_file():
            return None
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(src, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        except Exception as exc:  # hub unreachable / offline without a cached copy
            raise ExpertLoadError(f"expert {cfg.name!r}: cannot read the preprocessor config of {src!r} "
                                  f"({_first_line(exc)})") from exc
        if found is None:
            return None
        path = Path(found)
    data = json.loads(path.read_text())
    if "image_mean" not in data or "image_std" not in data:
        return None
    return tuple(data["image_mean"]), tuple(data["image_std"])
