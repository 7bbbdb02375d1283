"""Downloading a dataset version from storage nodes, and fetching its manifest and
placement record.

Downloading fetches and verifies the manifest (trying every node), reads the latest
placement record as a hint, and per chunk fetches shares in parallel until ``k`` of
them verify against the manifest, falling back to other shares and other nodes on
missing, slow or corrupt ones. Bad nodes are recorded in a :class:`DownloadReport`.
Plaintext goes to a temporary file renamed into place only once every chunk has
authenticated. A paged (format-4) manifest's pages are fetched as the download
reaches them, each verified against its parent before use, so only a window of
chunk records is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from datagora.crypto.aead import ChunkCipher, DataKey
from datagora.crypto.sealed import WrappedKey, unwrap_data_key
from datagora.storage.erasure import block_size
from datagora.storage.errors import (
    DownloadError,
    IntegrityError,
    ManifestError,
    NodeFailure,
    PlacementError,
)
from datagora.storage.manifest import (
    ChunkAssembler,
    ChunkRecord,
    VerifiedManifest,
    verify_manifest,
)
from datagora.storage.pages import PageRef, VerifiedPage, verify_page, walk_leaf_pages
from datagora.storage.pipeline import decrypt_chunk
from datagora.storage.placement import (
    POSITIONAL_VERSION,
    PlacementRecord,
    verify_placement,
    verify_placement_names,
)
from datagora.storage.shares import SHARE_HEADER_SIZE, VerifiedShare
from datagora.storage.transport import Progress, Session, chunk_window

__all__ = [
    "DownloadReport",
    "chunk_records",
    "download_version",
    "fetch_manifest",
    "fetch_placement",
]


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


async def fetch_manifest(
    session: Session, manifest_hash: bytes, report: DownloadReport
) -> VerifiedManifest:
    """Fetch the manifest from any node (trying every one) and verify it against
    ``manifest_hash``, noting bad nodes in ``report``. Raises :class:`DownloadError`
    if no node has a valid copy."""
    name = manifest_hash.hex()
    for node in session.nodes:
        try:
            response = await session.get(node, f"shares/{name}")
        except NodeFailure as failure:
            report.note(node, failure.reason)
            continue
        if response is None:
            continue
        try:
            return await asyncio.to_thread(verify_manifest, response.content, manifest_hash)
        except ManifestError as exc:
            report.note(node, f"served a bad manifest: {exc}")
    raise DownloadError(
        f"no storage node holds a valid manifest {name} (tried {len(session.nodes)} nodes)",
        report,
    )


async def fetch_page(
    session: Session,
    verified: VerifiedManifest,
    report: DownloadReport,
    ref: PageRef,
    level: int,
    first_leaf: int,
    count: int,
) -> VerifiedPage:
    """One page of a paged manifest from any node that serves bytes verifying
    against ``ref``; a node serving a tampered page is noted and the next tried.
    Raises :class:`DownloadError` if none does."""
    tree = verified.manifest.tree
    assert tree is not None
    problems: list[str] = []
    for node in session.nodes:
        if node in session.dead:
            continue
        try:
            response = await session.get(node, f"shares/{ref.address.hex()}")
        except NodeFailure as failure:
            report.note(node, failure.reason)
            continue
        if response is None:
            continue
        try:
            return verify_page(response.content, ref, tree, level, first_leaf, count)
        except IntegrityError as exc:
            report.note(node, f"served a bad manifest page: {exc}")
            problems.append(f"{node}: {exc}")
    raise DownloadError(
        f"no storage node holds a valid manifest page {ref.address.hex()} of manifest "
        f"{verified.digest.hex()}" + (f" ({'; '.join(problems)})" if problems else ""),
        report,
    )


async def chunk_records(
    session: Session, verified: VerifiedManifest, report: DownloadReport, hold: bool = False
) -> AsyncGenerator[tuple[int, ChunkRecord], None]:
    """Every ``(chunk_index, record)`` in order: inline (formats 2, 3) or read page by
    page (format 4). With ``hold``, each record is kept by ``verified`` (for
    :meth:`VerifiedManifest.chunk`) until the caller forgets it."""
    m = verified.manifest
    if m.tree is None:
        for item in enumerate(m.chunks):
            yield item
        return
    assembler = ChunkAssembler(verified, hold=hold)

    async def fetch(ref: PageRef, level: int, first: int, count: int) -> VerifiedPage:
        return await fetch_page(session, verified, report, ref, level, first, count)

    async for page in walk_leaf_pages(m.tree, fetch):
        for item in assembler.feed(page):
            yield item


async def fetch_placement(session: Session, verified: VerifiedManifest) -> PlacementRecord | None:
    """The current placement record of a manifest (highest valid sequence), or None.
    A paged manifest's record is checked against every page (read again, one at a
    time)."""

    async def listing(node: str) -> list[tuple[int, str, str]]:
        try:
            response = await session.get(node, f"placements?manifest={verified.digest.hex()}")
            records = response.json()["records"] if response is not None else []
            return [(-int(r["sequence"]), str(r["hash"]), node) for r in records]
        except (NodeFailure, ValueError, KeyError, TypeError):
            return []

    found = sorted(
        entry
        for entries in await asyncio.gather(
            *(listing(n) for n in session.nodes if n not in session.dead)
        )
        for entry in entries
    )
    for _, name, node in found:
        try:
            response = await session.get(node, f"shares/{name}")
            if response is None:
                continue
            if not verified.paged:
                return verify_placement(response.content, bytes.fromhex(name), verified)
            record = verify_placement_names(response.content, bytes.fromhex(name), verified)
            if record.format_version == POSITIONAL_VERSION:
                record.check(verified)  # needs no page
                return record
            listed = 0
            async for index, chunk in chunk_records(
                session, verified, DownloadReport(verified.digest)
            ):
                listed += record.check_chunk(index, chunk)
            record.check_listed(listed)
            return record
        except (NodeFailure, PlacementError, DownloadError, ValueError):
            continue
    return None


# -- download -------------------------------------------------------------------


async def download_version(
    session: Session,
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
    verified = await fetch_manifest(session, manifest_hash, report)
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
    placement = await fetch_placement(session, verified)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            await _download_into(session, verified, data_key, placement, out, report, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return report


async def _download_into(
    session: Session,
    verified: VerifiedManifest,
    key: DataKey,
    placement: PlacementRecord | None,
    out: IO[bytes],
    report: DownloadReport,
    progress: Progress | None,
) -> None:
    m = verified.manifest
    cipher = ChunkCipher(key, m.dataset_id, m.version)
    window = chunk_window(m.chunk_size)
    pending: deque[asyncio.Task[list[VerifiedShare]]] = deque()
    next_chunk = 0
    count = m.chunk_count
    # Chunk records in order; a paged manifest's pages are read as they are reached
    # and each record is dropped once its chunk is written.
    records = chunk_records(session, verified, report, hold=True)
    try:
        for index in range(count):
            # Refill in waves, so each node's requests for a wave share a batch.
            while next_chunk < count and len(pending) <= window // 2:
                while next_chunk < count and len(pending) < window:
                    await anext(records)
                    pending.append(
                        asyncio.create_task(
                            _fetch_chunk(session, verified, next_chunk, placement, report)
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
            verified.forget(index)
            if progress is not None:
                progress(report.bytes_written, m.plaintext_size)
    except BaseException:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise
    finally:
        await records.aclose()
    if report.bytes_written != m.plaintext_size:
        raise IntegrityError(
            f"decoded {report.bytes_written} bytes, the manifest says {m.plaintext_size}"
        )


def _candidates(
    session: Session,
    share: bytes,
    position: int,
    hinted: tuple[str, ...],
    report: DownloadReport,
) -> Iterator[str]:
    start = position % len(session.nodes)
    rotated = session.nodes[start:] + session.nodes[:start]
    ordered = list(dict.fromkeys([*(h for h in hinted if h in session.nodes), *rotated]))
    # Nodes that served bad bytes are asked last; unreachable ones not at all.
    ordered.sort(key=lambda n: n in report.bad_nodes)
    for node in ordered:
        if node not in session.dead:
            yield node


async def _fetch_chunk(
    session: Session,
    verified: VerifiedManifest,
    index: int,
    placement: PlacementRecord | None,
    report: DownloadReport,
) -> list[VerifiedShare]:
    """``k`` verified shares of chunk ``index``; primary shares first (cheap to
    decode), then parity, each from its hinted node first, then any other."""
    m = verified.manifest
    record = verified.chunk(index)
    hashes = record.shares
    size = SHARE_HEADER_SIZE + block_size(record.ciphertext_size, m.k)

    async def try_share(number: int) -> VerifiedShare | None:
        share = hashes[number]
        leaf = index * m.n + number
        hinted = placement.where_at(leaf, share) if placement is not None else ()
        for node in _candidates(session, share, index + number, hinted, report):
            try:
                data = await session.gets.submit(node, (share, size))
            except NodeFailure as failure:
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
            f"and verified from {len(session.nodes)} nodes; bad nodes: "
            f"{_summary(report)} — try again when more storage nodes are back",
            report,
        )
    return got[: m.k]


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


def _summary(report: DownloadReport) -> str:
    if not report.bad_nodes:
        return "none"
    return "; ".join(f"{n}: {r[0]}" for n, r in report.bad_nodes.items())
