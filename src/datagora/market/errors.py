"""Errors of the market flows, all under :class:`datagora.errors.DatagoraError`."""

from __future__ import annotations

from datagora.errors import DatagoraError, NotFoundError

__all__ = [
    "DealError",
    "NoSuchDataset",
    "PublishError",
]


class PublishError(DatagoraError):
    """A publish could not be completed (nothing on chain refers to partial data)."""


class NoSuchDataset(NotFoundError):
    """No dataset has this id on the network's ledger (look ids up with a search)."""


class DealError(DatagoraError):
    """A storage deal cannot be opened as asked (e.g. a node holds none of the shares)."""
