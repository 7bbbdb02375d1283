"""The storage layer: encrypted, erasure-coded, Merkle-verified dataset versions.

Store and fetch them on storage nodes with :class:`StorageClient` (``upload``,
``download``), keep them fully redundant with :class:`Repairer`, and keep private
key/value records with :class:`KVStore`. Underneath: encode with
:func:`encode_stream` (collecting records in a :class:`ManifestBuilder`), verify
manifests from the network with :func:`verify_manifest` and shares with
``VerifiedManifest.verify_share`` or :func:`verify_share`, and decode with
:func:`decode_stream`. Formats: ``docs/formats.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from datagora.storage.errors import (
    DownloadError,
    ErasureError,
    IntegrityError,
    ManifestError,
    NoNodesError,
    PlacementError,
    RecordNotFound,
    RepairError,
    StorageError,
    UploadError,
)
from datagora.storage.manifest import ChunkRecord, Manifest, VerifiedManifest, verify_manifest
from datagora.storage.merkle import MerkleProof, MerkleTree, merkle_root, verify_inclusion
from datagora.storage.pipeline import (
    EncodedChunk,
    EncodingParams,
    ManifestBuilder,
    decode_stream,
    decrypt_chunk,
    encode_stream,
    new_dataset_id,
    rebuild_shares,
)
from datagora.storage.placement import PlacementRecord, parse_placement, verify_placement
from datagora.storage.shares import Share, ShareHeader, VerifiedShare, share_name, verify_share

if TYPE_CHECKING:
    from datagora.storage.client import AsyncStorageClient, StorageClient
    from datagora.storage.download import DownloadReport
    from datagora.storage.records import KVStore, KVVersion
    from datagora.storage.repair import CheckReport, Repairer, ShareProblem
    from datagora.storage.upload import UploadResult

# The client, the records and repair pull in the ledger client (web3, eth-account):
# a storage node process never needs them, so they load on first use.
_LAZY = {
    "AsyncStorageClient": "client",
    "DownloadReport": "download",
    "StorageClient": "client",
    "UploadResult": "upload",
    "KVStore": "records",
    "KVVersion": "records",
    "CheckReport": "repair",
    "Repairer": "repair",
    "ShareProblem": "repair",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncStorageClient",
    "CheckReport",
    "ChunkRecord",
    "DownloadError",
    "DownloadReport",
    "EncodedChunk",
    "EncodingParams",
    "ErasureError",
    "IntegrityError",
    "KVStore",
    "KVVersion",
    "Manifest",
    "ManifestBuilder",
    "ManifestError",
    "MerkleProof",
    "MerkleTree",
    "NoNodesError",
    "PlacementError",
    "PlacementRecord",
    "RecordNotFound",
    "RepairError",
    "Repairer",
    "Share",
    "ShareHeader",
    "ShareProblem",
    "StorageClient",
    "StorageError",
    "UploadError",
    "UploadResult",
    "VerifiedManifest",
    "VerifiedShare",
    "decode_stream",
    "decrypt_chunk",
    "encode_stream",
    "merkle_root",
    "new_dataset_id",
    "parse_placement",
    "rebuild_shares",
    "share_name",
    "verify_inclusion",
    "verify_manifest",
    "verify_placement",
    "verify_share",
]
