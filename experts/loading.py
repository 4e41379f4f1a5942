"""Weights in and out: hub ids, timm names, local directories and saved experts (safetensors only),
read straight into the dtype they are built in (experts.registry sets it)."""
from __future__ import annotations

import inspect
import math
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from experts.base import CONFIG_FILE, WEIGHTS_FILE
from experts.config import ExpertConfig
from experts.errors import ExpertConfigError, ExpertLoadError

logger = logging.getLogger(__name__)

_HF_SKIP = {"transformers_version", "architectures", "dtype", "torch_dtype", "model_type"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


def saved_expert_dir(source: str | None) -> Path | None:
    """The directory if `source` is one written by VisionExpert.save_pretrained."""
    if not source:
        return None
    p = Path(source).expanduser()
    return p if (p / CONFIG_FILE).is_file() else None


@contextmanager
def default_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Modules built inside have their floating weights in `dtype` from the start (as transformers'
    from_pretrained does): a pretrained expert is never whole in fp32 before its cast."""
    if dtype is None:
        yield
        return
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def read_safetensors(path: str | Path, prefix: str = "", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file (keys under `prefix`, prefix removed), each read and
    converted to `dtype` on its own: the file's dtype is never held whole."""
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if key.startswith(prefix):
                t = f.get_tensor(key)
                out[key[len(prefix):]] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


class SafetensorsState(Mapping):
    """.safetensors files (one, or a directory: model.safetensors or the shards its
    model.safetensors.index.json lists) as a read-only state dict whose tensors are read (and
    converted to `dtype`) only when asked for: a loader that fills one submodule at a time holds one
    at a time, and `flat_range` reads a part of a tensor without the rest."""

    def __init__(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        self.path, self.dtype = Path(path), dtype
        self._files = {k: self.path for k in _keys(self.path)} if self.path.is_file() else _shards(self.path)

    def _convert(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t

    def __getitem__(self, key: str) -> torch.Tensor:
        with safe_open(str(self._files[key]), framework="pt") as f:
            return self._convert(f.get_tensor(key))

    def shape(self, key: str) -> tuple[int, ...]:
        with safe_open(str(self._files[key]), framework="pt") as f:
            return tuple(f.get_slice(key).get_shape())

    def flat_range(self, key: str, start: int, end: int) -> torch.Tensor:
        """Elements [start, end) of the flattened tensor, reading only the rows that hold them."""
        with safe_open(str(self._files[key]), framework="pt") as f:
            part = f.get_slice(key)
            shape = part.get_shape()
            if len(shape) == 0:
                return self._convert(f.get_tensor(key).reshape(-1)[start:end])
            row = math.prod(shape[1:])
            first = start // row
            rows = part[first:-(-end // row)].reshape(-1)
        return self._convert(rows[start - first * row:end - first * row])

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def _shards(directory: Path) -> dict[str, Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return {k: directory / name for k, name in json.loads(index.read_text())["weight_map"].items()}
    if (directory / "model.safetensors").is_file():
        return {k: directory / "model.safetensors" for k in _keys(directory / "model.safetensors")}
    raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def check_keys(expected, given, owner: str = "") -> None:
    """A strict load's key check: missing or unexpected keys are a RuntimeError naming a few of each."""
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    if missing or unexpected:
        raise RuntimeError(f"{owner}{': ' if owner else ''}missing keys {missing[:3]} ({len(missing)}), "
                           f"unexpected keys {unexpected[:3]} ({len(unexpected)})")


def stream_safetensors(module: nn.Module, path: str | Path, prefix: str = "") -> None:
    """Strict load of a .safetensors file into `module`, one tensor at a time, each converted to the
    dtype of the weight it fills: peak memory is the module plus one tensor. Missing, unexpected or
    mis-shaped weights are a RuntimeError naming them (as load_state_dict's)."""
    targets = module.state_dict(keep_vars=True)
    with safe_open(str(path), framework="pt") as f:
        keys = {k[len(prefix):]: k for k in f.keys() if k.startswith(prefix)}
        check_keys(targets, keys)
        with torch.no_grad():
            for name, key in keys.items():
                t, dst = f.get_tensor(key), targets[name]
                if t.shape != dst.shape:
                    raise RuntimeError(f"size mismatch for {name}: {tuple(t.shape)} in the file, {tuple(dst.shape)} "
                                       "in the model")
                dst.copy_(t)


# ---- transformers ------------------------------------------------------------------------------
def hf_config(config_cls, cfg: ExpertConfig):
    """A transformers config from `cfg.arch`; unknown keys are an error naming them."""
    params = set(inspect.signature(config_cls.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(cfg.arch) - params)
    if unknown:
        raise ExpertConfigError(f"expert {cfg.name!r}: unknown {config_cls.__name__} keys in arch: {', '.join(unknown)}")
    return config_cls(**cfg.arch)


def hf_arch(config) -> dict[str, Any]:
    """The non-default fields of a transformers config, as arch kwargs."""
    params = set(inspect.signature(type(config).__init__).parameters)
    return {k: v for k, v in config.to_diff_dict().items() if k in params and k not in _HF_SKIP}


def hf_model_type(cfg: ExpertConfig) -> str | None:
    """`model_type` of the checkpoint at `cfg.source` (to tell a full model from its encoder)."""
    from transformers import PretrainedConfig

    src = cfg.source
    if looks_like_path(src) and not Path(src).expanduser().is_dir():
        raise ExpertLoadError(f"expert {cfg.name!r}: weight directory {src!r} does not exist")
    try:
        return PretrainedConfig.get_config_dict(str(Path(src).expanduser()) if looks_like_path(src) else src)[0].get("model_type")
    except Exception as exc:
        raise ExpertLoadError(f"expert {cfg.name!r}: cannot read a config from {src!r} ({_first_line(exc)})") from exc


def load_hf(model_cls, cfg: ExpertConfig, submodule: str | None = None, **kwargs: Any) -> nn.Module:
    """`model_cls.from_pretrained(source)`; with `submodule`, the model is the full checkpoint's
    class and its `submodule` (e.g. Pix2Struct's "encoder") is returned; `kwargs` go to from_pretrained.
    Missing weights are an error."""
    src = cfg.source
    if looks_like_path(src) and not Path(src).expanduser().is_dir():
        raise ExpertLoadError(f"expert {cfg.name!r}: weight directory {src!r} does not exist")
    try:
        model, info = model_cls.from_pretrained(str(Path(src).expanduser()) if looks_like_path(src) else src,
                                                output_loading_info=True,  # read into the default dtype
                                                **{"attn_implementation": cfg.attention,
                                                   "dtype": torch.get_default_dtype(), **kwargs})
    except Exception as exc:  # hub unreachable, no weight file, bad config: one clear error
        raise ExpertLoadError(f"expert {cfg.name!r}: cannot load {model_cls.__name__} weights from {src!r} ({_first_line(exc)})") from exc
    missing = list(info.get("missing_keys") or [])
    if submodule:
        missing = [k for k in missing if k.startswith(submodule + ".")]
        model = getattr(model, submodule)
    if missing:
        raise ExpertLoadError(
            f"expert {cfg.name!r}: {len(missing)} weights missing in {src!r} (e.g. {missing[0]}); refusing a partial random init"
        )
    logger.info("expert %s: loaded %s from %s", cfg.name, model_cls.__name__, src)
    return model


# ---- timm --------------------------------------------------------------------------------------
def timm_kwargs(cfg: ExpertConfig, fixed: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    arch = dict(cfg.arch)
    name = arch.pop("model_name", None)
    if not name:
        raise ExpertConfigError(f"expert {cfg.name!r}: a timm expert needs arch.model_name")
    arch.update(fixed)
    return name, arch


def create_timm(cfg: ExpertConfig, fixed: dict[str, Any]) -> nn.Module:
    import timm

    name, kwargs = timm_kwargs(cfg, fixed)
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, RuntimeError) as exc:
        raise ExpertConfigError(f"expert {cfg.name!r}: timm cannot build {name!r} from arch ({_first_line(exc)})") from exc


def _timm_hub_id(name: str) -> str:
    """A timm pretrained name with the hub repository it downloads from (e.g. 'x.tag (hub timm/x.tag)')."""
    import timm

    hub = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)  # None for a name timm does not know
    return f"{name} (hub {hub})" if hub and hub != name else name


def load_timm(cfg: ExpertConfig, fixed: dict[str, Any]) -> nn.Module:
    import timm

    name, kwargs = timm_kwargs(cfg, fixed)
    src = cfg.source
    try:
        if looks_like_path(src):
            p = Path(src).expanduser()
            files = [p] if p.is_file() else sorted(p.glob("*.safetensors")) if p.is_dir() else []
            if not files or files[0].suffix != ".safetensors":
                raise ExpertLoadError(f"expert {cfg.name!r}: no .safetensors weight file at {src!r}")
            # built in the default dtype; timm maps the file (no copy of it) and copies each weight in
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(files[0])}, **kwargs)
        else:
            model = timm.create_model(src, pretrained=True, **kwargs)
    except ExpertLoadError:
        raise
    except Exception as exc:  # hub unreachable, missing keys (strict load), bad file
        where = src if looks_like_path(src) else _timm_hub_id(src)
        raise ExpertLoadError(f"expert {cfg.name!r}: cannot load timm weights from {where!r} ({_first_line(exc)})") from exc
    logger.info("expert %s: loaded timm %s from %s", cfg.name, name, src)
    return model


# ---- saved experts -----------------------------------------------------------------------------
def read_saved_config(directory: str | Path) -> ExpertConfig:
    d = Path(directory).expanduser()
    path = d / CONFIG_FILE
    if not path.is_file():
        raise ExpertLoadError(f"no saved expert at {str(d)!r} ({CONFIG_FILE} missing)")
    if not (d / WEIGHTS_FILE).is_file():
        raise ExpertLoadError(f"saved expert {str(d)!r} has no {WEIGHTS_FILE}")
    try:
        return ExpertConfig.model_validate(json.loads(path.read_text()))
    except ValueError as exc:
        raise ExpertLoadError(f"{path}: not a valid expert config ({_first_line(exc)})") from exc


def load_saved_backbone(expert_cls, cfg: ExpertConfig) -> nn.Module:
    """pretrained=True with `source` = a saved expert dir: rebuild its arch, stream its weights in
    (in the default dtype, one tensor at a time)."""
    saved = read_saved_config(cfg.source)
    if saved.family != cfg.family:
        raise ExpertLoadError(f"expert {cfg.name!r}: {cfg.source!r} holds a {saved.family!r} expert, not {cfg.family!r}")
    backbone = expert_cls.build_backbone(saved.with_overrides(attention=cfg.attention))
    try:
        stream_safetensors(backbone, Path(cfg.source).expanduser() / WEIGHTS_FILE, "backbone.")
    except RuntimeError as exc:
        raise ExpertLoadError(f"expert {cfg.name!r}: weights in {cfg.source!r} do not fit ({_first_line(exc)})") from exc
    return backbone
