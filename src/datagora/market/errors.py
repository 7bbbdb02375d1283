"""Errors of the market flows, all under :class:`datagora.errors.DatagoraError`."""

from __future__ import annotations

from datagora.errors import DatagoraError

__all__ = [
    "PublishError",
]


class PublishError(DatagoraError):
    """A publish could not be completed (nothing on chain refers to partial data)."""
