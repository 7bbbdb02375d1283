"""The root of datagora's one exception tree.

Every error a user can cause is a :class:`DatagoraError`; its message says what
went wrong and, where it can, what to do next. Callers may catch the base class
or a precise subclass. Each layer defines its own errors in its ``errors.py``
(``datagora.ledger.errors``, ``datagora.storage.errors``, …); only the errors
every layer shares live here. ``docs/errors.md`` draws the whole tree.
"""

from __future__ import annotations


class DatagoraError(Exception):
    """Base class of every error datagora raises on purpose."""


class ConfigError(DatagoraError):
    """A configuration, deployment record or network file is missing or invalid."""


class NotFoundError(DatagoraError):
    """Something asked for does not exist (a dataset in the catalog, a file, a record)."""


class Unreachable(DatagoraError):
    """A part of the network did not answer (connection refused, timed out): the chain,
    a node, the catalog. ``url`` is where it was asked, if known."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url
