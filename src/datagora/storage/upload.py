"""Uploading a dataset version to storage nodes, and storing its metadata there.

Uploading streams the input chunk by chunk through the pipeline (encrypt, erasure
code, hash) and sends the ``n`` shares of each chunk to the nodes that answer, the
starting node rotating per chunk: one share per node while there are enough nodes.
Like Tahoe-LAFS's ``shares.happy``, an upload needs only ``happy`` distinct nodes
(:func:`default_happy`, configurable): with fewer than ``n`` answering nodes the
remaining shares go to nodes already holding one of that chunk (the least loaded
first), and such a node still counts once. A node that fails is avoided from then
on and its share goes to the least loaded healthy node; when fewer than ``happy``
distinct nodes hold a chunk's shares the upload fails with :class:`UploadError`
(never a silent partial). The placement record (sequence 0) lists one share per
node per chunk; the extra shares (``UploadResult.extra_shares``) are stored but
left out of it, so `repair` sees them as without a location and tops the
placement up onto distinct nodes once they answer, while downloads still find the
extras by asking every node. The manifest and the placement record are then
stored on every healthy node. A dataset too large for a single-document manifest
gets a paged one (format 4): each manifest page is stored like the manifest, on
every healthy node, as soon as it is complete, and always before the manifest.
:func:`rewrap_version` stores a manifest whose data key is wrapped anew, and
:func:`store_blob` a small content-addressed document.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
from array import array
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from datagora.crypto import pre
from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import WrappedKey, wrap_data_key
from datagora.storage.errors import NodeFailure, NoNodesError, StorageError, UploadError
from datagora.storage.limits import (
    PLACEMENT_NODES_BYTES,
    DatasetTooLarge,
    check_dataset_size,
    max_chunks,
    too_large,
)
from datagora.storage.manifest import AnyWrappedKey, Manifest, VerifiedManifest, verify_manifest
from datagora.storage.pipeline import EncodedChunk, EncodingParams, ManifestBuilder, encode_stream
from datagora.storage.placement import POSITIONAL_VERSION, PlacementRecord, pack_holders
from datagora.storage.transport import Progress, Session, chunk_window, healthy_nodes, node_health

__all__ = ["UploadResult", "default_happy", "rewrap_version", "store_blob", "upload_version"]

_T = TypeVar("_T")


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
    extra_shares: dict[bytes, str] = dataclasses.field(default_factory=dict)
    """Shares stored on a node that already holds another share of their chunk (too
    few nodes answered), by share hash: not in the placement record, so `repair`
    places them on distinct nodes later."""
    happy: int = 0
    """The distinct nodes each chunk's shares had to reach (shares.happy)."""

    @property
    def needs_repair(self) -> bool:
        """True if some share is not on a distinct node of its own: run `repair` once
        the missing nodes answer again."""
        return bool(self.extra_shares)


def default_happy(k: int, n: int) -> int:
    """The default ``happy`` for ``k``-of-``n`` shares: the fewest distinct nodes
    (at least ``k``) over which the ``n`` shares, spread evenly, still leave ``k``
    after losing any one node; ``n`` if none does. 4 for 4-of-6, 3 for 3-of-5."""
    for happy in range(k, n + 1):
        if n - -(-n // happy) >= k:
            return happy
    return n


def check_happy(happy: int | None, k: int, n: int) -> int:
    """``happy`` (or its default) after checking ``k <= happy <= n``."""
    if happy is None:
        return default_happy(k, n)
    if type(happy) is not int or not k <= happy <= n:
        raise StorageError(
            f"shares.happy must be between k ({k}) and n ({n}) distinct nodes, got {happy!r}"
        )
    return happy


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


async def upload_version(
    session: Session,
    src: str | os.PathLike[str] | BinaryIO,
    params: EncodingParams,
    key: DataKey,
    owner: X25519PublicKey | AnyWrappedKey,
    metadata_copies: int,
    progress: Progress | None = None,
    happy: int | None = None,
) -> UploadResult:
    """Encode ``src`` (a path or a binary file object) as dataset version
    ``params`` under ``key`` and store it on the session's nodes.

    ``owner`` is the public key the data key is wrapped for in the manifest, or
    an already wrapped key. ``key`` must be fresh for this dataset version.
    ``metadata_copies`` is the least number of nodes that must accept the manifest
    and placement record; ``happy`` the distinct nodes each chunk's shares must
    reach (default :func:`default_happy`). Raises :class:`NoNodesError` when fewer
    than ``happy`` nodes answer and :class:`UploadError` if shares cannot be placed.
    """
    happy = check_happy(happy, params.k, params.n)
    if sum(len(node) + 3 for node in session.nodes) > PLACEMENT_NODES_BYTES:
        raise UploadError(
            f"the storage node list is longer than a placement record holds "
            f"({PLACEMENT_NODES_BYTES} bytes of URLs); nothing was uploaded"
        )
    if isinstance(owner, WrappedKey | pre.WrappedKey):
        wrapped = owner
    else:
        wrapped = wrap_data_key(key, owner, params.dataset_id, params.version)
    handle, owned, total = _open_source(src)
    try:
        # Refused before any share is stored (a stream of unknown size is stopped
        # at the limit instead).
        check_dataset_size(
            total, params.chunk_size, params.k, params.n, params.leaves_per_page, params.fanout
        )
        return await _upload(
            session, handle, params, key, wrapped, total, metadata_copies, progress, happy
        )
    finally:
        if owned:
            handle.close()


async def _upload(
    session: Session,
    handle: BinaryIO,
    params: EncodingParams,
    key: DataKey,
    wrapped: AnyWrappedKey,
    total: int,
    metadata_copies: int,
    progress: Progress | None,
    happy: int,
) -> UploadResult:
    if len(session.nodes) < happy:
        raise NoNodesError(
            f"{params.k}-of-{params.n} shares need {happy} distinct storage nodes "
            f"(shares.happy); only {len(session.nodes)} are configured"
        )
    health = await node_health(session)
    healthy = [node for node, answer in health.items() if isinstance(answer, dict)]
    for node in healthy:
        cap = health[node]
        if isinstance(cap, dict) and isinstance(cap.get("max_batch_bytes"), int):
            session.batch_caps[node] = cap["max_batch_bytes"]
    if len(healthy) < happy:
        down = ", ".join(n for n in session.nodes if n not in healthy)
        raise NoNodesError(
            f"publishing {params.k}-of-{params.n} shares needs {happy} storage nodes to "
            f"answer (shares.happy); only {len(healthy)} of {len(session.nodes)} answer "
            f"(down: {down}); nothing was published"
        )
    failed: dict[str, str] = {}
    extras: dict[bytes, str] = {}
    builder = ManifestBuilder(params)
    # Where each share went, by Merkle leaf: 0 for none (an extra share), else 1 +
    # the node's index in node_ids (2 bytes a share, whatever the dataset's size).
    node_ids: dict[str, int] = {}
    holders = array("H")
    # Chunks in flight: enough to fill a batch per node, few enough that memory
    # stays bounded whatever the file size.
    window = chunk_window(params.chunk_size)
    pending: deque[tuple[asyncio.Task[list[str]], EncodedChunk]] = deque()
    chunks = encode_stream(handle, params, key)
    done = 0
    most = max_chunks(params.n, params.leaves_per_page, params.fanout)

    async def settle_oldest() -> None:
        nonlocal done
        task, chunk = pending.popleft()
        if not task.done():
            session.puts.flush()
        placed = await task
        first: set[str] = set()
        for share, node in zip(chunk.shares, placed, strict=True):
            if node in first:
                extras[share.sha256] = node
                holders.append(0)
            else:
                first.add(node)
                holders.append(node_ids.setdefault(node, len(node_ids) + 1))
        done += chunk.plaintext_size
        if progress is not None:
            progress(done, max(total, done))

    try:
        while True:
            # Encoding runs in a thread, overlapping the uploads of earlier chunks.
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                break
            if chunk.index >= most:
                raise DatasetTooLarge(
                    too_large(
                        chunk.index * params.chunk_size + chunk.plaintext_size,
                        params.chunk_size, params.k, params.n,
                        "The shares stored so far were not published",
                        params.leaves_per_page, params.fanout,
                    )
                )  # fmt: skip
            builder.add(chunk)
            if builder.pages:
                await _store_pages(session, healthy, builder, failed, metadata_copies)
            task = asyncio.create_task(_place_chunk(session, chunk, healthy, failed, happy))
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
    await _store_pages(session, healthy, builder, failed, metadata_copies)
    raw = manifest.to_bytes()
    verified = verify_manifest(raw, manifest.digest())
    nodes = list(node_ids)
    if verified.paged:
        record = PlacementRecord.create_positional(verified, nodes, pack_holders(holders))
    else:
        locations = {
            share: [nodes[j - 1]]
            for share, j in zip(manifest.share_hashes(), holders, strict=True)
            if j
        }
        record = PlacementRecord.create(verified, locations, sequence=0)
    live = [n for n in healthy if n not in failed]
    await _store_version_records(session, live, raw, record, failed, metadata_copies)
    return UploadResult(
        manifest=manifest,
        manifest_hash=verified.digest,
        root=manifest.merkle_root,
        placement=record,
        placement_hash=record.digest(),
        failed_nodes=failed,
        extra_shares=extras,
        happy=happy,
    )


async def _place_chunk(
    session: Session,
    chunk: EncodedChunk,
    healthy: list[str],
    failed: dict[str, str],
    happy: int,
) -> list[str]:
    """Store the chunk's shares on at least ``happy`` distinct nodes, one per node
    while there are enough; returns the node of each share."""
    live = [n for n in healthy if n not in failed]
    n = len(chunk.shares)
    if len(live) < happy:
        raise UploadError(_too_few(chunk.index, live, failed, happy))
    start = chunk.index % len(live)
    order = live[start:] + live[:start]
    load = {node: 0 for node in order}
    for j in range(n):
        load[order[j % len(order)]] += 1

    def least_loaded() -> str | None:
        left = [x for x in order if x not in failed]
        return min(left, key=lambda x: load[x]) if left else None

    async def put_one(number: int, node: str) -> str:
        share = chunk.shares[number]
        while True:
            try:
                await session.puts.submit(node, share)
                return node
            except NodeFailure as failure:
                failed.setdefault(node, failure.reason)
            # The healthy node holding the fewest shares of this chunk (none first).
            spare = least_loaded()
            if spare is None:
                raise UploadError(_too_few(chunk.index, [], failed, happy))
            node = spare
            load[node] += 1

    placed = await _gather_or_cancel(put_one(j, order[j % len(order)]) for j in range(n))
    distinct = {node for node in placed if node not in failed}
    if len(distinct) < happy:
        raise UploadError(_too_few(chunk.index, sorted(distinct), failed, happy))
    return placed


async def rewrap_version(
    session: Session,
    verified: VerifiedManifest,
    placement: PlacementRecord | None,
    wrapped: AnyWrappedKey,
    metadata_copies: int,
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
    if placement is not None and placement.format_version == POSITIONAL_VERSION:
        record = PlacementRecord.create_positional(
            new, placement.nodes, placement.holders, sequence=0
        )
    else:
        locations = dict(placement.locations) if placement is not None else {}
        record = PlacementRecord.create(new, locations, sequence=0)
    failed: dict[str, str] = {}
    live = await healthy_nodes(session)
    await _store_version_records(session, live, raw, record, failed, metadata_copies)
    return UploadResult(m, new.digest, m.merkle_root, record, record.digest(), failed)


async def store_blob(session: Session, data: bytes, what: str, metadata_copies: int) -> bytes:
    """Store a small content-addressed document (e.g. public metadata) on several
    nodes; returns its SHA-256, under which any node serves it."""
    failed: dict[str, str] = {}
    live = await healthy_nodes(session)
    await _store_metadata(session, live, data, "shares", what, failed, metadata_copies)
    return hashlib.sha256(data).digest()


async def _store_pages(
    session: Session,
    healthy: list[str],
    builder: ManifestBuilder,
    failed: dict[str, str],
    metadata_copies: int,
) -> None:
    """Store the manifest pages written so far, like the manifest, then forget them."""
    live = [n for n in healthy if n not in failed]
    while builder.pages:
        _, page = builder.pages.pop(0)
        await _store_metadata(session, live, page, "shares", "manifest page", failed,
                              metadata_copies)  # fmt: skip


async def _store_version_records(
    session: Session,
    nodes: list[str],
    manifest: bytes,
    record: PlacementRecord,
    failed: dict[str, str],
    metadata_copies: int,
) -> None:
    """Store a version's manifest, then its placement record, each on enough nodes."""
    await _store_metadata(session, nodes, manifest, "shares", "manifest", failed, metadata_copies)
    await _store_metadata(
        session, nodes, record.to_bytes(), "placements", "placement record", failed,
        metadata_copies,
    )  # fmt: skip


async def _store_metadata(
    session: Session,
    nodes: list[str],
    data: bytes,
    kind: str,
    what: str,
    failed: dict[str, str],
    metadata_copies: int,
) -> None:
    name = hashlib.sha256(data).hexdigest()

    async def one(node: str) -> bool:
        try:
            await session.put(node, name, data, kind)
            return True
        except NodeFailure as failure:
            failed.setdefault(node, failure.reason)
            return False

    stored = sum(await asyncio.gather(*(one(n) for n in nodes)))
    needed = min(metadata_copies, len(nodes))
    if stored < needed or stored == 0:
        raise UploadError(
            f"the {what} was stored on {stored} nodes, fewer than the {needed} required; "
            "nothing was published — check the storage nodes and upload again"
        )


def _too_few(index: int, live: list[str], failed: dict[str, str], happy: int) -> str:
    lost = ", ".join(f"{node} ({why})" for node, why in failed.items())
    return (
        f"chunk {index}: its shares need {happy} distinct healthy nodes (shares.happy), "
        f"only {len(live)} left after failures of {lost}; nothing was published — add or "
        "restart storage nodes and upload again"
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
