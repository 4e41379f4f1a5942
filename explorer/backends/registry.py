"""The backends by name (`backend:` in a study file, `--backend` on the command line): each entry
builds an Executor from (runner=, spec=, workdir=). Imported only when chosen, so Ray and SLURM
code loads only for their studies."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from experts.lookup import Registry

if TYPE_CHECKING:  # the registry stays light: the CLI reads its names before anything heavy loads
    from explorer.backends.base import Executor, Runner

ExecutorFactory = Callable[..., "Executor"]  # (runner=, spec=, workdir=) -> Executor
BACKENDS: Registry[ExecutorFactory] = Registry("backend")
ALIASES = {"optuna": "local"}  # the local backend's name in studies written before it had its own


def _entry(module: str, factory: str) -> ExecutorFactory:
    def build(**kw: Any) -> "Executor":
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"backend {module.rsplit('.', 1)[-1]!r} is not available: {err}") from None
        return getattr(mod, factory)(**kw)

    return build


BACKENDS.register("local", _entry("explorer.backends.local", "make_local_executor"))
BACKENDS.register("ray", _entry("explorer.backends.ray_tune.driver", "make_ray_executor"))
BACKENDS.register("slurm", _entry("explorer.backends.slurm", "make_slurm_executor"))
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS.names())


def backend_name(name: str) -> str:
    """The canonical name (aliases resolved); an unknown one raises UnknownNameError naming the known."""
    name = ALIASES.get(name, name)
    BACKENDS.get(name)
    return name


def build_executor(backend: str, runner: "Runner", spec: Any, workdir: str | Path | None = None) -> "Executor":
    return BACKENDS.get(backend_name(backend))(runner=runner, spec=spec, workdir=workdir)
