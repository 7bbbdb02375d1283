"""The audit layer's errors, under :class:`datagora.errors.DatagoraError`."""

from __future__ import annotations

from datagora.errors import DatagoraError


class AuditError(DatagoraError):
    """An audit could not be carried out (not: the audit found a problem)."""


class DatasetNotFound(AuditError):
    """The ledger has no dataset with this id."""


class LogQueryError(AuditError):
    """The chain refused or failed a log query, even over a single block."""
