"""Errors of the weight sources, each saying what went wrong and what the user can do."""

from __future__ import annotations

__all__ = ["WeightsError", "UnknownWeights", "WeightsUnavailable", "WeightsFormatError", "UnsafeCheckpointError"]


class WeightsError(Exception):
    """Base class: anything that stops pretrained weights from being applied."""


class UnknownWeights(WeightsError, ValueError):
    """A weight id or preset-level source name that does not exist (for this architecture)."""


class WeightsUnavailable(WeightsError):
    """The file is not in the cache and cannot be downloaded (offline, 404, downloads not allowed).

    ``url`` is where it lives, ``path`` is where the user can drop a copy by hand.
    """

    def __init__(self, message: str, url: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.path = path


class WeightsFormatError(WeightsError, ValueError):
    """A checkpoint that is corrupt, of an unknown layout, or does not fit the target architecture."""


class UnsafeCheckpointError(WeightsFormatError):
    """A pickle that would build arbitrary Python objects (and could run code): refused, never loaded."""
