"""The storage client: upload a dataset version to storage nodes and download it back.

Uploading streams the input chunk by chunk through the pipeline (encrypt, erasure
code, hash) and sends the ``n`` shares of each chunk to ``n`` distinct nodes, the
starting node rotating per chunk; a node that fails is avoided from then on and its
share goes to another healthy node holding no share of that chunk, or the upload
fails with :class:`UploadError` (never a silent partial). The manifest and a
placement record (sequence 0) are then stored on every healthy node.

Downloading fetches and verifies the manifest (trying every node), reads the latest
placement record as a hint, and per chunk fetches shares in parallel until ``k`` of
them verify against the manifest, falling back to other shares and other nodes on
missing, slow or corrupt ones. Bad nodes are recorded in a :class:`DownloadReport`.
Plaintext goes to a temporary file renamed into place only once every chunk has
authenticated.

:class:`AsyncStorageClient` is the asyncio implementation (httpx, bounded
concurrency); :class:`StorageClient` is a synchronous facade over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, Generic, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from datagora.crypto import pre
from datagora.crypto.aead import ChunkCipher, DataKey
from datagora.crypto.sealed import WrappedKey, unwrap_data_key, wrap_data_key
from datagora.http1 import Http1Error, Http1Pool
from datagora.storage.batch import (
    MAX_BATCH_SHARES,
    BatchFormatError,
    decode_frame,
    frame_parts,
    frame_size,
)
from datagora.storage.erasure import block_size
from datagora.storage.errors import (
    DownloadError,
    IntegrityError,
    ManifestError,
    NoNodesError,
    PlacementError,
    StorageError,
    UploadError,
)
from datagora.storage.manifest import AnyWrappedKey, Manifest, VerifiedManifest, verify_manifest
from datagora.storage.pipeline import (
    EncodedChunk,
    EncodingParams,
    ManifestBuilder,
    decrypt_chunk,
    encode_stream,
)
from datagora.storage.placement import PlacementRecord, verify_placement
from datagora.storage.shares import SHARE_HEADER_SIZE, Share, VerifiedShare

__all__ = [
    "AsyncStorageClient",
    "DownloadReport",
    "Progress",
    "StorageClient",
    "UploadResult",
    "normalise_node",
]

Progress = Callable[[int, int], None]
"""A progress callback: ``(bytes_done, bytes_total)``, called from the caller's thread."""

DEFAULT_CONCURRENCY: Final = 16
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_METADATA_COPIES: Final = 3
# Shares travel in batches of _BATCH_MIN_BYTES to _BATCH_BYTES per request, at most
# _BATCH_INFLIGHT batches per node at a time; a smaller batch goes when its
# operation must wait for it, or after a linger (retries, the end of a file).
# Chunks in flight during an upload or download hold at most _WINDOW_BYTES of
# plaintext (times n/k for their shares) and number at most _WINDOW_CHUNKS, so
# memory stays bounded whatever the file size.
_BATCH_BYTES: Final = 4 << 20
_BATCH_MIN_BYTES: Final = 2 << 20
_BATCH_INFLIGHT: Final = 2
_PUT_LINGER: Final = 0.2
_GET_LINGER: Final = 0.002
_WINDOW_BYTES: Final = 16 << 20
_WINDOW_CHUNKS: Final = 32
_T = TypeVar("_T")
_I = TypeVar("_I")
_R = TypeVar("_R")


def normalise_node(url: str) -> str:
    """A node location as written in placement records: its base URL, no trailing slash."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise NoNodesError(f"a storage node is an http(s) base URL, got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class UploadResult:
    """What an upload produced. ``manifest_hash`` and ``root`` go on chain
    (``DataNFT.manifest_hash`` / ``merkle_root``); ``placement_hash`` names the
    placement record stored next to the manifest."""

    manifest: Manifest
    manifest_hash: bytes
    root: bytes
    placement: PlacementRecord
    placement_hash: bytes
    failed_nodes: dict[str, str]
    """Nodes that failed during the upload (and were avoided), with the reason."""


@dataclass
class DownloadReport:
    """What a download (or manifest fetch) saw: shares fetched, and bad nodes with reasons."""

    manifest_hash: bytes
    bytes_written: int = 0
    shares_fetched: int = 0
    bad_nodes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, node: str, reason: str) -> None:
        """Record that ``node`` misbehaved (kept in order, without repeats)."""
        reasons = self.bad_nodes.setdefault(node, [])
        if reason not in reasons:
            reasons.append(reason)


class _NodeFailure(Exception):
    """A node did not answer usefully (down, slow, refused): try elsewhere."""

    def __init__(self, reason: str, reachable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reachable = reachable


def _open_source(src: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, bool, int]:
    if isinstance(src, (str, os.PathLike)):
        handle: BinaryIO = open(src, "rb")  # noqa: SIM115 - closed by the caller
        return handle, True, os.fstat(handle.fileno()).st_size
    total = 0
    try:
        total = os.fstat(src.fileno()).st_size - src.tell()
    except (OSError, AttributeError, ValueError):
        with contextlib.suppress(OSError, AttributeError, ValueError):
            here = src.tell()
            total = src.seek(0, os.SEEK_END) - here
            src.seek(here)
    return src, False, max(total, 0)


class _Batcher(Generic[_I, _R]):
    """Groups one operation's share requests per node into batch requests.

    Items wait in a per-node queue until ``min_bytes`` of them (by ``weight``) are
    queued, ``linger`` seconds have passed since the queue was last sent from, or
    :meth:`flush` is called; a batch then takes up to ``max_bytes`` of them (at
    most :data:`MAX_BATCH_SHARES`). A node has at most ``inflight`` batches under
    way. A failed batch fails each of its items with the same
    :class:`_NodeFailure`, so callers keep their per-share fallbacks.
    """

    def __init__(
        self,
        send: Callable[[str, list[_I]], Awaitable[list[_R]]],
        weight: Callable[[_I], int],
        max_bytes: Callable[[str], int],
        min_bytes: int,
        linger: float,
        inflight: int = _BATCH_INFLIGHT,
    ) -> None:
        self._send = send
        self._weight = weight
        self._max_bytes = max_bytes
        self._min_bytes = min_bytes
        self._linger = linger
        self._inflight = inflight
        self._queues: dict[str, deque[tuple[_I, asyncio.Future[_R]]]] = {}
        self._queued: dict[str, int] = {}  # weight queued per node
        self._busy: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, node: str, item: _I) -> _R:
        """The item's result once its batch is answered; raises :class:`_NodeFailure`."""
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(node, deque()).append((item, future))
        self._queued[node] = self._queued.get(node, 0) + self._weight(item)
        self._kick(node, force=False)
        return await future

    def flush(self) -> None:
        """Send every queued item now (the caller is about to wait for them)."""
        for node in self._queues:
            self._kick(node, force=True)

    def _expire(self, node: str) -> None:
        del self._timers[node]
        self._kick(node, force=True)

    def _kick(self, node: str, force: bool) -> None:
        queue = self._queues[node]
        sent = False
        while not self._closed and queue and self._busy.get(node, 0) < self._inflight:
            if not force and self._queued[node] < self._min_bytes:
                break
            batch: list[tuple[_I, asyncio.Future[_R]]] = []
            size, cap = 0, self._max_bytes(node)
            while queue and len(batch) < MAX_BATCH_SHARES:
                item, future = queue[0]
                weight = self._weight(item)
                if batch and size + weight > cap:
                    break
                queue.popleft()
                self._queued[node] -= weight
                if future.done():  # its caller gave up (cancelled): do not send it
                    continue
                batch.append((item, future))
                size += weight
            if not batch:
                continue
            self._busy[node] = self._busy.get(node, 0) + 1
            task = asyncio.create_task(self._run(node, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            sent = True
        if sent or not queue:
            timer = self._timers.pop(node, None)
            if timer is not None:
                timer.cancel()
        if queue and not self._closed and node not in self._timers:
            self._timers[node] = asyncio.get_running_loop().call_later(
                self._linger, self._expire, node
            )

    async def _run(self, node: str, batch: list[tuple[_I, asyncio.Future[_R]]]) -> None:
        try:
            results = await self._send(node, [item for item, _ in batch])
        except _NodeFailure as failure:
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._busy[node] -= 1
            self._kick(node, force=False)

    async def close(self) -> None:
        """Cancel batches still under way (the operation is over)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _Session:
    """One operation's HTTP client, concurrency bound, share batchers and node
    bookkeeping."""

    def __init__(self, http: httpx.AsyncClient, concurrency: int, timeout: float) -> None:
        self.http = http
        self.bulk = Http1Pool(timeout)
        self.slots = asyncio.Semaphore(concurrency)
        self.dead: dict[str, str] = {}
        self.batch_caps: dict[str, int] = {}
        self.puts: _Batcher[Share, None] = _Batcher(
            self._put_batch,
            lambda share: len(share.data),
            self._batch_cap,
            _BATCH_MIN_BYTES,
            _PUT_LINGER,
        )
        self.gets: _Batcher[tuple[bytes, int], bytes | None] = _Batcher(
            self._get_batch,
            lambda wanted: wanted[1],
            self._batch_cap,
            _BATCH_MIN_BYTES,
            _GET_LINGER,
        )

    def _batch_cap(self, node: str) -> int:
        return min(_BATCH_BYTES, self.batch_caps.get(node, _BATCH_BYTES))

    async def close(self) -> None:
        await self.puts.close()
        await self.gets.close()
        await self.bulk.close()

    async def _bulk_request(
        self,
        method: str,
        url: str,
        node: str,
        body: list[bytes],
        content_type: str,
        limit: int | None = None,
    ) -> httpx.Response:
        """A batch request, through the lean HTTP/1.1 client for plain-http nodes
        (see :mod:`datagora.http1`), else through httpx."""
        if not Http1Pool.supports(url):
            if content_type == "application/json":
                payload = json.loads(b"".join(body))
                return await self._request(method, url, node, json=payload, limit=limit)
            return await self._request(method, url, node, body, limit=limit)
        async with self.slots:
            try:
                answer = await self.bulk.request(method, url, body, content_type, limit)
            except Http1Error as exc:
                failure = _NodeFailure(
                    "timed out" if exc.timed_out else exc.reason, reachable=False
                )
            else:
                return httpx.Response(answer.status, headers=answer.headers, content=answer.content)
        self.dead.setdefault(node, failure.reason)
        raise failure

    async def _request(
        self,
        method: str,
        url: str,
        node: str,
        content: bytes | list[bytes] | None = None,
        json: Any = None,
        limit: int | None = None,
    ) -> httpx.Response:
        """The response (its body read, refused beyond ``limit`` bytes when given); a
        node that times out or cannot be reached is remembered as dead. ``content``
        given as pieces is sent piece by piece, never joined in memory."""
        headers = None
        body: bytes | AsyncIterator[bytes] | None
        if isinstance(content, list):
            headers = {"content-length": str(sum(len(part) for part in content))}
            body = _pieces(content)
        else:
            body = content
        async with self.slots:
            try:
                if limit is None:
                    return await self.http.request(
                        method, url, content=body, json=json, headers=headers
                    )
                return await self._capped(self.http.build_request(method, url, json=json), limit)
            except httpx.TimeoutException:
                failure = _NodeFailure("timed out", reachable=False)
            except httpx.TransportError as exc:
                failure = _NodeFailure(f"unreachable ({type(exc).__name__})", reachable=False)
        self.dead.setdefault(node, failure.reason)
        raise failure

    async def _capped(self, request: httpx.Request, limit: int) -> httpx.Response:
        response = await self.http.send(request, stream=True)
        try:
            pieces: list[bytes] = []
            size = 0
            async for piece in response.aiter_bytes():
                pieces.append(piece)
                size += len(piece)
                if size > limit:
                    raise _NodeFailure(f"answered with more than the {limit} bytes asked for")
        finally:
            await response.aclose()
        # A response whose body is already read, for the callers' uniform handling.
        content = b"".join(pieces)
        del pieces
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    async def _put_batch(self, node: str, shares: list[Share]) -> list[None]:
        parts = frame_parts([(share.sha256, share.data) for share in shares])
        response = await self._bulk_request(
            "PUT", f"{node}/shares", node, parts, "application/octet-stream"
        )
        if response.status_code not in (200, 201):
            raise _NodeFailure(f"refused a batch of {len(shares)} shares: {_detail(response)}")
        try:
            count = response.json()["count"]
        except (ValueError, KeyError, TypeError):
            count = None
        if count != len(shares):
            raise _NodeFailure(f"did not confirm a batch of {len(shares)} shares")
        return [None] * len(shares)

    async def _get_batch(self, node: str, wanted: list[tuple[bytes, int]]) -> list[bytes | None]:
        sizes = [size for _, size in wanted]
        names = json.dumps({"names": [name.hex() for name, _ in wanted]}).encode()
        response = await self._bulk_request(
            "POST",
            f"{node}/shares/batch-get",
            node,
            [names],
            "application/json",
            limit=frame_size(sizes),
        )
        if response.status_code != 200:
            raise _NodeFailure(f"POST /shares/batch-get failed: {_detail(response)}")
        try:
            entries = decode_frame(response.content, max(sizes), sum(sizes), len(wanted))
        except BatchFormatError as exc:
            raise _NodeFailure(f"served a malformed batch: {exc}") from None
        got: dict[bytes, bytes] = {}
        for name, data in entries:
            got.setdefault(name, data)
        # Bytes under a requested name are checked by the caller against the manifest.
        return [got.get(name) for name, _ in wanted]

    async def put(self, node: str, name: str, data: bytes, kind: str = "shares") -> None:
        response = await self._request("PUT", f"{node}/{kind}/{name}", node, data)
        if response.status_code not in (200, 201):
            raise _NodeFailure(f"refused {kind[:-1]} {name[:16]}…: {_detail(response)}")

    async def get(self, node: str, path: str) -> httpx.Response | None:
        """The response, or None on 404."""
        response = await self._request("GET", f"{node}/{path}", node)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _NodeFailure(f"GET /{path.split('?')[0]} failed: {_detail(response)}")
        return response

    async def head(self, node: str, name: str) -> int | None:
        """The stored size of a blob, or None if the node does not hold it."""
        response = await self._request("HEAD", f"{node}/shares/{name}", node)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _NodeFailure(f"HEAD failed: HTTP {response.status_code}")
        return int(response.headers.get("content-length", "0"))


def _decrypt_into(
    out: IO[bytes],
    verified: VerifiedManifest,
    key: DataKey,
    index: int,
    shares: list[VerifiedShare],
    cipher: ChunkCipher,
) -> int:
    plaintext = decrypt_chunk(verified, key, index, shares, cipher)
    out.write(plaintext)
    return len(plaintext)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"HTTP {response.status_code}" + (f" ({detail})" if isinstance(detail, str) else "")


class AsyncStorageClient:
    """Talks to a set of storage nodes (base URLs) with bounded concurrency.

    ``concurrency`` bounds the HTTP requests in flight; ``timeout`` (seconds) is
    per request, after which a node counts as slow and is avoided;
    ``metadata_copies`` is the least number of nodes that must accept the manifest
    and placement record for an upload to succeed.
    """

    def __init__(
        self,
        nodes: Sequence[str],
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        metadata_copies: int = DEFAULT_METADATA_COPIES,
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

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        # Room for a kept-alive connection per node and request slot: a pool smaller
        # than that closes idle connections to one node to open others elsewhere.
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=self.concurrency * len(self.nodes),
        )
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout), limits=limits, trust_env=False
        ) as http:
            session = _Session(http, self.concurrency, self.timeout)
            try:
                yield session
            finally:
                await session.close()

    # -- health ---------------------------------------------------------------------

    async def health(self) -> dict[str, dict[str, Any] | str]:
        """Each node's ``/health`` answer, or the reason it is unhealthy."""
        async with self._session() as session:
            return await self._health(session)

    async def _health(self, session: _Session) -> dict[str, dict[str, Any] | str]:
        async def one(node: str) -> dict[str, Any] | str:
            try:
                response = await session.get(node, "health")
            except _NodeFailure as failure:
                return failure.reason
            if response is None:
                return "no /health endpoint: not a datagora storage node"
            try:
                body = response.json()
            except ValueError:
                return "malformed /health answer"
            return body if isinstance(body, dict) and body.get("status") == "ok" else "unhealthy"

        answers = await asyncio.gather(*(one(n) for n in self.nodes))
        return dict(zip(self.nodes, answers, strict=True))

    async def _healthy(self, session: _Session) -> list[str]:
        return [n for n, h in (await self._health(session)).items() if isinstance(h, dict)]

    # -- upload ---------------------------------------------------------------------

    async def upload(
        self,
        src: str | os.PathLike[str] | BinaryIO,
        params: EncodingParams,
        key: DataKey,
        owner: X25519PublicKey | AnyWrappedKey,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Encode ``src`` (a path or a binary file object) as dataset version
        ``params`` under ``key`` and store it on the nodes.

        ``owner`` is the public key the data key is wrapped for in the manifest, or
        an already wrapped key. ``key`` must be fresh for this dataset version.
        Raises :class:`NoNodesError` with fewer than ``n`` healthy nodes and
        :class:`UploadError` if shares cannot all be placed.
        """
        if isinstance(owner, WrappedKey | pre.WrappedKey):
            wrapped = owner
        else:
            wrapped = wrap_data_key(key, owner, params.dataset_id, params.version)
        handle, owned, total = _open_source(src)
        try:
            async with self._session() as session:
                return await self._upload(session, handle, params, key, wrapped, total, progress)
        finally:
            if owned:
                handle.close()

    async def _upload(
        self,
        session: _Session,
        handle: BinaryIO,
        params: EncodingParams,
        key: DataKey,
        wrapped: AnyWrappedKey,
        total: int,
        progress: Progress | None,
    ) -> UploadResult:
        if len(self.nodes) < params.n:
            raise NoNodesError(
                f"{params.n} shares per chunk need {params.n} distinct storage nodes; "
                f"only {len(self.nodes)} are configured"
            )
        health = await self._health(session)
        healthy = [node for node, answer in health.items() if isinstance(answer, dict)]
        for node in healthy:
            cap = health[node]
            if isinstance(cap, dict) and isinstance(cap.get("max_batch_bytes"), int):
                session.batch_caps[node] = cap["max_batch_bytes"]
        if len(healthy) < params.n:
            down = ", ".join(n for n in self.nodes if n not in healthy)
            raise NoNodesError(
                f"{params.n} shares per chunk need {params.n} healthy storage nodes; "
                f"only {len(healthy)} answer (down: {down})"
            )
        failed: dict[str, str] = {}
        builder = ManifestBuilder(params)
        locations: dict[bytes, list[str]] = {}
        # Chunks in flight: enough to fill a batch per node, few enough that memory
        # stays bounded whatever the file size.
        window = _window(params.chunk_size)
        pending: deque[tuple[asyncio.Task[list[str]], EncodedChunk]] = deque()
        chunks = encode_stream(handle, params, key)
        done = 0

        async def settle_oldest() -> None:
            nonlocal done
            task, chunk = pending.popleft()
            if not task.done():
                session.puts.flush()
            placed = await task
            for share, node in zip(chunk.shares, placed, strict=True):
                locations[share.sha256] = [node]
            done += chunk.plaintext_size
            if progress is not None:
                progress(done, max(total, done))

        try:
            while True:
                # Encoding runs in a thread, overlapping the uploads of earlier chunks.
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                builder.add(chunk)
                task = asyncio.create_task(self._place_chunk(session, chunk, healthy, failed))
                pending.append((task, chunk))
                while len(pending) >= window:
                    await settle_oldest()
            while pending:
                await settle_oldest()
        except BaseException:
            for task, _ in pending:
                task.cancel()
            await asyncio.gather(*(t for t, _ in pending), return_exceptions=True)
            raise
        manifest = builder.build(wrapped)
        raw = manifest.to_bytes()
        verified = verify_manifest(raw, manifest.digest())
        record = PlacementRecord.create(verified, locations, sequence=0)
        live = [n for n in healthy if n not in failed]
        await self._store_metadata(session, live, raw, "shares", "manifest", failed)
        await self._store_metadata(
            session, live, record.to_bytes(), "placements", "placement record", failed
        )
        return UploadResult(
            manifest=manifest,
            manifest_hash=verified.digest,
            root=manifest.merkle_root,
            placement=record,
            placement_hash=record.digest(),
            failed_nodes=failed,
        )

    async def _place_chunk(
        self, session: _Session, chunk: EncodedChunk, healthy: list[str], failed: dict[str, str]
    ) -> list[str]:
        """Store the chunk's shares on distinct nodes; returns the node of each share."""
        live = [n for n in healthy if n not in failed]
        n = len(chunk.shares)
        if len(live) < n:
            raise UploadError(_too_few(chunk.index, live, failed, n))
        start = chunk.index % len(live)
        order = live[start:] + live[:start]
        used = set(order[:n])

        async def put_one(number: int, node: str) -> str:
            share = chunk.shares[number]
            while True:
                try:
                    await session.puts.submit(node, share)
                    return node
                except _NodeFailure as failure:
                    failed.setdefault(node, failure.reason)
                # Another live node holding no share of this chunk, if any is left.
                spare = [x for x in order if x not in used and x not in failed]
                if not spare:
                    raise UploadError(
                        f"chunk {chunk.index}: share {number} could not be stored: node "
                        f"{node} failed ({failed[node]}) and every other healthy node "
                        "already holds a share of this chunk; nothing was published — "
                        "add or restart storage nodes and upload again"
                    )
                node = spare[0]
                used.add(node)

        return await _gather_or_cancel(put_one(j, order[j]) for j in range(n))

    async def rewrap(
        self, verified: VerifiedManifest, placement: PlacementRecord | None, wrapped: AnyWrappedKey
    ) -> UploadResult:
        """Store a copy of a version's manifest whose data key is wrapped anew.

        The shares (and so the Merkle root) are unchanged: only the key wrap differs,
        so no data moves. The owner does this when a version's key must be wrapped to
        another delegating key. The placement record is carried over to the new
        manifest.
        """
        m = dataclasses.replace(verified.manifest, wrapped_key=wrapped)
        raw = m.to_bytes()
        new = verify_manifest(raw, m.digest())
        locations = dict(placement.locations) if placement is not None else {}
        record = PlacementRecord.create(new, locations, sequence=0)
        failed: dict[str, str] = {}
        async with self._session() as session:
            live = await self._healthy(session)
            await self._store_metadata(session, live, raw, "shares", "manifest", failed)
            await self._store_metadata(
                session, live, record.to_bytes(), "placements", "placement record", failed
            )
        return UploadResult(m, new.digest, m.merkle_root, record, record.digest(), failed)

    async def put_blob(self, data: bytes, what: str = "document") -> bytes:
        """Store a small content-addressed document (e.g. public metadata) on several
        nodes; returns its SHA-256, under which any node serves it."""
        failed: dict[str, str] = {}
        async with self._session() as session:
            live = await self._healthy(session)
            await self._store_metadata(session, live, data, "shares", what, failed)
        return hashlib.sha256(data).digest()

    async def _store_metadata(
        self,
        session: _Session,
        nodes: list[str],
        data: bytes,
        kind: str,
        what: str,
        failed: dict[str, str],
    ) -> None:
        name = hashlib.sha256(data).hexdigest()

        async def one(node: str) -> bool:
            try:
                await session.put(node, name, data, kind)
                return True
            except _NodeFailure as failure:
                failed.setdefault(node, failure.reason)
                return False

        stored = sum(await asyncio.gather(*(one(n) for n in nodes)))
        needed = min(self.metadata_copies, len(nodes))
        if stored < needed or stored == 0:
            raise UploadError(
                f"the {what} was stored on {stored} nodes, fewer than the {needed} required; "
                "nothing was published — check the storage nodes and upload again"
            )

    # -- manifest and placement -------------------------------------------------------

    async def fetch_manifest(
        self, manifest_hash: bytes, report: DownloadReport | None = None
    ) -> VerifiedManifest:
        """Fetch the manifest from any node (trying every one) and verify it against
        ``manifest_hash``. Raises :class:`DownloadError` if no node has a valid copy."""
        async with self._session() as session:
            return await self._fetch_manifest(
                session, manifest_hash, report or DownloadReport(manifest_hash)
            )

    async def _fetch_manifest(
        self, session: _Session, manifest_hash: bytes, report: DownloadReport
    ) -> VerifiedManifest:
        name = manifest_hash.hex()
        for node in self.nodes:
            try:
                response = await session.get(node, f"shares/{name}")
            except _NodeFailure as failure:
                report.note(node, failure.reason)
                continue
            if response is None:
                continue
            try:
                return await asyncio.to_thread(verify_manifest, response.content, manifest_hash)
            except ManifestError as exc:
                report.note(node, f"served a bad manifest: {exc}")
        raise DownloadError(
            f"no storage node holds a valid manifest {name} (tried {len(self.nodes)} nodes)",
            report,
        )

    async def fetch_placement(self, verified: VerifiedManifest) -> PlacementRecord | None:
        """The current placement record of a manifest (highest valid sequence), or None."""
        async with self._session() as session:
            return await self._fetch_placement(session, verified)

    async def _fetch_placement(
        self, session: _Session, verified: VerifiedManifest
    ) -> PlacementRecord | None:
        async def listing(node: str) -> list[tuple[int, str, str]]:
            try:
                response = await session.get(node, f"placements?manifest={verified.digest.hex()}")
                records = response.json()["records"] if response is not None else []
                return [(-int(r["sequence"]), str(r["hash"]), node) for r in records]
            except (_NodeFailure, ValueError, KeyError, TypeError):
                return []

        found = sorted(
            entry
            for entries in await asyncio.gather(
                *(listing(n) for n in self.nodes if n not in session.dead)
            )
            for entry in entries
        )
        for _, name, node in found:
            try:
                response = await session.get(node, f"shares/{name}")
                if response is not None:
                    return verify_placement(response.content, bytes.fromhex(name), verified)
            except (_NodeFailure, PlacementError, ValueError):
                continue
        return None

    # -- download -------------------------------------------------------------------

    async def download(
        self,
        manifest_hash: bytes,
        key: DataKey | X25519PrivateKey,
        dst: str | os.PathLike[str],
        progress: Progress | None = None,
    ) -> DownloadReport:
        """Fetch, verify and decrypt dataset version ``manifest_hash`` into ``dst``.

        ``key`` is the data key, or the owner's X25519 private key (the data key is
        then unwrapped from the manifest). ``dst`` appears only complete: plaintext
        goes to a temporary file beside it, renamed into place after every chunk
        authenticated. Raises :class:`DownloadError` (with the report) when some
        chunk has fewer than ``k`` verifiable shares on the reachable nodes.
        """
        report = DownloadReport(manifest_hash)
        target = Path(dst)
        async with self._session() as session:
            verified = await self._fetch_manifest(session, manifest_hash, report)
            m = verified.manifest
            if isinstance(key, X25519PrivateKey):
                if not isinstance(m.wrapped_key, WrappedKey):
                    raise DownloadError(
                        "this version's data key is wrapped with Umbral: obtain it through "
                        "the proxies (datagora download), then pass the data key",
                        report,
                    )
                data_key = unwrap_data_key(m.wrapped_key, key, m.dataset_id, m.version)
            else:
                data_key = key
            placement = await self._fetch_placement(session, verified)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    await self._download_into(
                        session, verified, data_key, placement, out, report, progress
                    )
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
                raise
        return report

    async def _download_into(
        self,
        session: _Session,
        verified: VerifiedManifest,
        key: DataKey,
        placement: PlacementRecord | None,
        out: IO[bytes],
        report: DownloadReport,
        progress: Progress | None,
    ) -> None:
        m = verified.manifest
        cipher = ChunkCipher(key, m.dataset_id, m.version)
        window = _window(m.chunk_size)
        pending: deque[asyncio.Task[list[VerifiedShare]]] = deque()
        next_chunk = 0
        try:
            for index in range(len(m.chunks)):
                # Refill in waves, so each node's requests for a wave share a batch.
                while next_chunk < len(m.chunks) and len(pending) <= window // 2:
                    while next_chunk < len(m.chunks) and len(pending) < window:
                        pending.append(
                            asyncio.create_task(
                                self._fetch_chunk(session, verified, next_chunk, placement, report)
                            )
                        )
                        next_chunk += 1
                if not pending[0].done():
                    session.gets.flush()
                shares = await pending.popleft()
                # Decrypting and writing in a worker thread keeps the event loop (and
                # the downloads of later chunks) running while the page cache fills.
                report.bytes_written += await asyncio.to_thread(
                    _decrypt_into, out, verified, key, index, shares, cipher
                )
                if progress is not None:
                    progress(report.bytes_written, m.plaintext_size)
        except BaseException:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        if report.bytes_written != m.plaintext_size:
            raise IntegrityError(
                f"decoded {report.bytes_written} bytes, the manifest says {m.plaintext_size}"
            )

    def _candidates(
        self,
        session: _Session,
        share: bytes,
        position: int,
        placement: PlacementRecord | None,
        report: DownloadReport,
    ) -> Iterator[str]:
        hinted = placement.where(share) if placement is not None else ()
        start = position % len(self.nodes)
        rotated = self.nodes[start:] + self.nodes[:start]
        ordered = list(dict.fromkeys([*(h for h in hinted if h in self.nodes), *rotated]))
        # Nodes that served bad bytes are asked last; unreachable ones not at all.
        ordered.sort(key=lambda n: n in report.bad_nodes)
        for node in ordered:
            if node not in session.dead:
                yield node

    async def _fetch_chunk(
        self,
        session: _Session,
        verified: VerifiedManifest,
        index: int,
        placement: PlacementRecord | None,
        report: DownloadReport,
    ) -> list[VerifiedShare]:
        """``k`` verified shares of chunk ``index``; primary shares first (cheap to
        decode), then parity, each from its hinted node first, then any other."""
        m = verified.manifest
        hashes = m.chunks[index].shares
        size = SHARE_HEADER_SIZE + block_size(m.chunks[index].ciphertext_size, m.k)

        async def try_share(number: int) -> VerifiedShare | None:
            share = hashes[number]
            hinted = placement.where(share) if placement is not None else ()
            for node in self._candidates(session, share, index + number, placement, report):
                try:
                    data = await session.gets.submit(node, (share, size))
                except _NodeFailure as failure:
                    report.note(node, failure.reason)
                    continue
                if data is None:
                    if node in hinted:
                        report.note(node, f"missing share {share.hex()} it is placed to hold")
                    continue
                try:
                    verified_share = verified.verify_share(index, number, data)
                except IntegrityError as exc:
                    report.note(node, f"served a corrupt share: {exc}")
                    continue
                report.shares_fetched += 1
                return verified_share
            return None

        numbers = iter(range(m.n))
        running = {asyncio.create_task(try_share(next(numbers))) for _ in range(m.k)}
        got: list[VerifiedShare] = []
        try:
            while running and len(got) < m.k:
                finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    result = task.result()
                    if result is not None:
                        got.append(result)
                    else:
                        following = next(numbers, None)
                        if following is not None:
                            running.add(asyncio.create_task(try_share(following)))
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if len(got) < m.k:
            raise DownloadError(
                f"chunk {index}: only {len(got)} of the {m.k} shares needed could be fetched "
                f"and verified from {len(self.nodes)} nodes; bad nodes: "
                f"{_summary(report)} — try again when more storage nodes are back",
                report,
            )
        return got[: m.k]


async def _pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _window(chunk_size: int) -> int:
    """How many chunks an upload or download keeps in flight."""
    return max(2, min(_WINDOW_CHUNKS, _WINDOW_BYTES // chunk_size))


def _summary(report: DownloadReport) -> str:
    if not report.bad_nodes:
        return "none"
    return "; ".join(f"{n}: {r[0]}" for n, r in report.bad_nodes.items())


def _too_few(index: int, live: list[str], failed: dict[str, str], n: int) -> str:
    lost = ", ".join(f"{node} ({why})" for node, why in failed.items())
    return (
        f"chunk {index}: {n} shares need {n} distinct healthy nodes, only {len(live)} left "
        f"after failures of {lost}; nothing was published — add or restart storage nodes "
        "and upload again"
    )


async def _gather_or_cancel(coroutines: Iterable[Awaitable[_T]]) -> list[_T]:
    """Like ``asyncio.gather``, but the first failure cancels the rest."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


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
    ) -> None:
        self.aio = AsyncStorageClient(nodes, concurrency, timeout, metadata_copies)

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
