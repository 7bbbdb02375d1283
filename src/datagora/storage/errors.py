"""Errors of the storage layer, all under :class:`datagora.errors.DatagoraError`."""

from __future__ import annotations

from datagora.errors import DatagoraError

__all__ = [
    "BatchFormatError",
    "BatchTooLargeError",
    "DownloadError",
    "ErasureError",
    "IntegrityError",
    "ManifestError",
    "MetadataError",
    "NoNodesError",
    "NodeFailure",
    "PlacementError",
    "RecordNotFound",
    "RepairError",
    "StorageError",
    "UploadError",
    "VanishedError",
]


class StorageError(DatagoraError):
    """Base class of storage-layer errors."""


class IntegrityError(StorageError):
    """Bytes do not match the hash, proof or position they claim: discard them and
    fetch the share from another node."""


class ManifestError(StorageError):
    """A manifest is malformed, inconsistent, or does not match its expected hash."""


class MetadataError(DatagoraError):
    """A metadata document is invalid; the message names the field and the rule.

    Not a :class:`StorageError`: the document is the publisher's, not the nodes'.
    """


class PlacementError(StorageError):
    """A placement record is malformed or does not fit its manifest."""


class ErasureError(StorageError):
    """Erasure coding parameters or inputs are invalid (bad k/n, too few shares)."""


class NoNodesError(StorageError):
    """Too few storage nodes are configured or reachable for this operation."""


class UploadError(StorageError):
    """An upload could not place every share; nothing was published. Add or restart
    storage nodes and upload again."""


class DatasetTooLarge(UploadError):
    """A dataset whose manifest would exceed the manifest size limit at its chunk
    size; refused before any share is stored. Use a larger chunk size."""


class WriteRefused(StorageError):
    """A storage node refuses a write: ``status`` is the HTTP status (401 unsigned or
    badly signed, 403 no quota, 413 over quota), the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class DownloadError(StorageError):
    """A dataset version could not be fetched: too few verified shares of some chunk,
    or no node holds its manifest. ``report`` says which nodes failed and why."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class RepairError(StorageError):
    """Repair could not restore full redundancy (too few shares left, or too few
    healthy nodes to place the rebuilt shares on); ``report`` says what is left."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class RecordNotFound(StorageError):
    """A key/value record (or the requested version of it) does not exist."""


class BatchFormatError(StorageError):
    """A batch frame is malformed (bad magic, truncated, trailing bytes)."""


class BatchTooLargeError(BatchFormatError):
    """A batch frame exceeds a cap: too many entries, an entry or the total too large."""


class VanishedError(StorageError):
    """A blob a request relied on being held was deleted while it ran."""


class NodeFailure(StorageError):
    """A node did not answer usefully (down, slow, refused): try elsewhere."""

    def __init__(self, reason: str, reachable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reachable = reachable
