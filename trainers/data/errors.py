"""Errors of the data package: one line each, naming the file/record/field at fault."""
from __future__ import annotations

from collections.abc import Iterable


class DataError(ValueError):
    """Bad data (malformed record, broken image, bad argument): the message names the culprit."""


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the known names."""

    def __init__(self, what: str, name: str, known: Iterable[str]):
        self.message = f"unknown {what} {name!r}; known: {', '.join(sorted(known))}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message
