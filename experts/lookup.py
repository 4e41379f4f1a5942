"""Registry: the one name -> thing table of an extension point (expert families, fusions, benchmarks,
training engines, search strategies, backends). Lookups fail loudly with the known names."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from experts.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """`kind` names the extension point in errors; `loader` (optional) imports the modules that
    register into it, on the first lookup, so heavy or optional parts load only when asked for."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None,
                 error: Callable[[str, str, list[str]], Exception] = UnknownNameError) -> None:
        self.kind, self._loader, self._error = kind, loader, error
        self._things: dict[str, T] = {}

    def register(self, name: str, thing: T | None = None):
        """`reg.register("x", thing)`, or `@reg.register("x")` over a class or function."""
        if thing is None:
            return lambda t: self.register(name, t)
        if name in self._things and self._things[name] is not thing:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._things[name] = thing
        return thing

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def get(self, name: str) -> T:
        self._load()
        if name not in self._things:
            raise self._error(self.kind, name, sorted(self._things))
        return self._things[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._things)

    __getitem__ = get

    def items(self):
        self._load()
        return self._things.items()

    def keys(self):
        return self.names()

    def values(self):
        self._load()
        return list(self._things.values())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._things

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
