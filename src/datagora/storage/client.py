"""The storage client: upload a dataset version to storage nodes and download it back.

:class:`AsyncStorageClient` is the asyncio client (httpx, bounded concurrency): it
holds the nodes and settings and opens a :class:`~datagora.storage.transport.Session`
per operation, which :mod:`datagora.storage.upload` and
:mod:`datagora.storage.download` carry out. :class:`StorageClient` is a synchronous
facade over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from typing import Any, BinaryIO, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from eth_account.signers.local import LocalAccount

from datagora.crypto.aead import DataKey
from datagora.storage.auth import WriteSigner
from datagora.storage.download import (
    DownloadReport,
    download_version,
    fetch_manifest,
    fetch_placement,
)
from datagora.storage.errors import NoNodesError, StorageError
from datagora.storage.manifest import AnyWrappedKey, VerifiedManifest
from datagora.storage.pipeline import EncodingParams
from datagora.storage.placement import PlacementRecord
from datagora.storage.transport import Progress, Session, node_health, open_session
from datagora.storage.upload import UploadResult, rewrap_version, store_blob, upload_version

__all__ = [
    "AsyncStorageClient",
    "Progress",
    "StorageClient",
    "normalise_node",
]

DEFAULT_CONCURRENCY: Final = 16
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_METADATA_COPIES: Final = 3
HAPPY_ENV: Final = "DATAGORA_SHARES_HAPPY"
"""The environment variable that sets ``happy`` when the client is not given one."""


def _happy_from_env() -> int | None:
    raw = os.environ.get(HAPPY_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise StorageError(f"{HAPPY_ENV} must be a number of storage nodes, got {raw!r}") from None


def normalise_node(url: str) -> str:
    """A node location as written in placement records: its base URL, no trailing slash."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise NoNodesError(f"a storage node is an http(s) base URL, got {url!r}")
    return url.rstrip("/")


class AsyncStorageClient:
    """Talks to a set of storage nodes (base URLs) with bounded concurrency.

    ``concurrency`` bounds the HTTP requests in flight; ``timeout`` (seconds) is
    per request, after which a node counts as slow and is avoided;
    ``metadata_copies`` is the least number of nodes that must accept the manifest
    and placement record for an upload to succeed; ``happy`` is the number of
    distinct nodes each chunk's shares must reach (Tahoe's ``shares.happy``; default
    ``$DATAGORA_SHARES_HAPPY``, else :func:`~datagora.storage.upload.default_happy`).
    ``signer`` is the account that signs writes (it needs a quota on the nodes);
    without one the client can only read.
    """

    def __init__(
        self,
        nodes: Sequence[str],
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        metadata_copies: int = DEFAULT_METADATA_COPIES,
        happy: int | None = None,
        signer: LocalAccount | WriteSigner | None = None,
    ) -> None:
        unique = list(dict.fromkeys(normalise_node(n) for n in nodes))
        if not unique:
            raise NoNodesError("no storage nodes configured: give at least one node URL")
        if concurrency < 1 or timeout <= 0 or metadata_copies < 1:
            raise StorageError("concurrency, timeout and metadata_copies must be positive")
        self.nodes: tuple[str, ...] = tuple(unique)
        self.concurrency = concurrency
        self.timeout = timeout
        self.metadata_copies = metadata_copies
        self.happy = happy if happy is not None else _happy_from_env()
        self.signer = (
            signer if signer is None or isinstance(signer, WriteSigner) else WriteSigner(signer)
        )

    def session(self) -> contextlib.AbstractAsyncContextManager[Session]:
        """A :class:`~datagora.storage.transport.Session` for one operation on the nodes."""
        return open_session(self.nodes, self.concurrency, self.timeout, self.signer)

    async def health(self) -> dict[str, dict[str, Any] | str]:
        """Each node's ``/health`` answer, or the reason it is unhealthy."""
        async with self.session() as session:
            return await node_health(session)

    async def upload(
        self,
        src: str | os.PathLike[str] | BinaryIO,
        params: EncodingParams,
        key: DataKey,
        owner: X25519PublicKey | AnyWrappedKey,
        progress: Progress | None = None,
    ) -> UploadResult:
        """See :func:`~datagora.storage.upload.upload_version`."""
        async with self.session() as session:
            return await upload_version(
                session, src, params, key, owner, self.metadata_copies, progress, self.happy
            )

    async def rewrap(
        self, verified: VerifiedManifest, placement: PlacementRecord | None, wrapped: AnyWrappedKey
    ) -> UploadResult:
        """See :func:`~datagora.storage.upload.rewrap_version`."""
        async with self.session() as session:
            return await rewrap_version(session, verified, placement, wrapped, self.metadata_copies)

    async def put_blob(self, data: bytes, what: str = "document") -> bytes:
        """See :func:`~datagora.storage.upload.store_blob`."""
        async with self.session() as session:
            return await store_blob(session, data, what, self.metadata_copies)

    async def fetch_manifest(
        self, manifest_hash: bytes, report: DownloadReport | None = None
    ) -> VerifiedManifest:
        """See :func:`~datagora.storage.download.fetch_manifest`."""
        async with self.session() as session:
            return await fetch_manifest(
                session, manifest_hash, report or DownloadReport(manifest_hash)
            )

    async def fetch_placement(self, verified: VerifiedManifest) -> PlacementRecord | None:
        """See :func:`~datagora.storage.download.fetch_placement`."""
        async with self.session() as session:
            return await fetch_placement(session, verified)

    async def download(
        self,
        manifest_hash: bytes,
        key: DataKey | X25519PrivateKey,
        dst: str | os.PathLike[str],
        progress: Progress | None = None,
    ) -> DownloadReport:
        """See :func:`~datagora.storage.download.download_version`."""
        async with self.session() as session:
            return await download_version(session, manifest_hash, key, dst, progress)


class StorageClient:
    """Synchronous facade over :class:`AsyncStorageClient` (one event loop per call).

    >>> client = StorageClient(["http://127.0.0.1:7001", "http://127.0.0.1:7002", ...])
    >>> result = client.upload("data.csv", EncodingParams(new_dataset_id(), 1), key, owner_pub)
    >>> report = client.download(result.manifest_hash, owner_private_key, "copy.csv")

    From code already inside an event loop, use :attr:`aio` (the async client).
    """

    def __init__(
        self,
        nodes: Sequence[str],
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        metadata_copies: int = DEFAULT_METADATA_COPIES,
        happy: int | None = None,
        signer: LocalAccount | WriteSigner | None = None,
    ) -> None:
        self.aio = AsyncStorageClient(nodes, concurrency, timeout, metadata_copies, happy, signer)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The node base URLs, normalised."""
        return self.aio.nodes

    def upload(
        self,
        src: str | os.PathLike[str] | BinaryIO,
        params: EncodingParams,
        key: DataKey,
        owner: X25519PublicKey | AnyWrappedKey,
        progress: Progress | None = None,
    ) -> UploadResult:
        """See :meth:`AsyncStorageClient.upload`."""
        return asyncio.run(self.aio.upload(src, params, key, owner, progress))

    def download(
        self,
        manifest_hash: bytes,
        key: DataKey | X25519PrivateKey,
        dst: str | os.PathLike[str],
        progress: Progress | None = None,
    ) -> DownloadReport:
        """See :meth:`AsyncStorageClient.download`."""
        return asyncio.run(self.aio.download(manifest_hash, key, dst, progress))

    def fetch_manifest(self, manifest_hash: bytes) -> VerifiedManifest:
        """See :meth:`AsyncStorageClient.fetch_manifest`."""
        return asyncio.run(self.aio.fetch_manifest(manifest_hash))

    def fetch_placement(self, verified: VerifiedManifest) -> PlacementRecord | None:
        """See :meth:`AsyncStorageClient.fetch_placement`."""
        return asyncio.run(self.aio.fetch_placement(verified))

    def health(self) -> dict[str, dict[str, Any] | str]:
        """See :meth:`AsyncStorageClient.health`."""
        return asyncio.run(self.aio.health())

    def rewrap(
        self, verified: VerifiedManifest, placement: PlacementRecord | None, wrapped: AnyWrappedKey
    ) -> UploadResult:
        """See :meth:`AsyncStorageClient.rewrap`."""
        return asyncio.run(self.aio.rewrap(verified, placement, wrapped))

    def put_blob(self, data: bytes, what: str = "document") -> bytes:
        """See :meth:`AsyncStorageClient.put_blob`."""
        return asyncio.run(self.aio.put_blob(data, what))
