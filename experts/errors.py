"""Errors raised by the experts package (each message is one line that names the problem)."""
from __future__ import annotations


class UnknownNameError(KeyError):
    """An unknown expert family, preset or fusion name; the message lists the known names."""

    def __init__(self, kind: str, name: str, known) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class ExpertConfigError(ValueError):
    """A setting that cannot work for this expert (unreachable grid, bad size, bad arch key)."""


class ExpertLoadError(RuntimeError):
    """Weights could not be loaded from the configured source (never replaced by a random init)."""


class ExpertInputError(ValueError):
    """Images given to an expert are not float [B, 3, H, W]."""
