"""Errors of the catalog layer, all under :class:`datagora.errors.DatagoraError`."""

from __future__ import annotations

from datagora.errors import DatagoraError

__all__ = ["SearchError"]


class SearchError(DatagoraError):
    """A search request was malformed."""
