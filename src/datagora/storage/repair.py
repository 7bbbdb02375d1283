"""Checking and repairing a stored dataset version, without the data key.

Like Tahoe-LAFS's checker and repairer: :meth:`Repairer.check` fetches every share
from wherever the current placement record says it lives and verifies it against
the manifest; :meth:`Repairer.repair` additionally rebuilds every missing or corrupt
share from any ``k`` verified shares of its chunk (shares are ciphertext, so no key
is needed), stores it on a healthy node holding no other share of that chunk, and
writes a new placement record with the next sequence number.

Repair writes, so it signs as an account with a quota on the nodes; nodes that
read the ledger accept the new placement record only from the dataset's
controller. Rebuilt shares travel in batches (``PUT /shares``), several chunks'
worth per request. Only the repairer's own nodes are ever contacted: a location
in a placement record that is not one of them is reported, never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from eth_account.signers.local import LocalAccount

from datagora.storage.auth import WriteSigner
from datagora.storage.client import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, AsyncStorageClient
from datagora.storage.download import (
    DownloadReport,
    chunk_records,
    fetch_manifest,
    fetch_page,
    fetch_placement,
)
from datagora.storage.errors import IntegrityError, NodeFailure, RepairError
from datagora.storage.manifest import VerifiedManifest
from datagora.storage.pages import PageRef, VerifiedPage, walk_pages
from datagora.storage.pipeline import rebuild_shares
from datagora.storage.placement import (
    MAX_SEQUENCE,
    POSITIONAL_VERSION,
    PlacementRecord,
    holder_ids,
    pack_holders,
)
from datagora.storage.shares import Share, VerifiedShare
from datagora.storage.transport import Progress, Session, node_health

__all__ = ["CheckReport", "Repairer", "ShareProblem"]

# Chunks checked and repaired at a time: enough for their rebuilt shares to fill
# batches to each node.
_CHUNK_WINDOW: Final = 16


@dataclass(frozen=True)
class ShareProblem:
    """One share found missing or corrupt at one location (``node`` is None when the
    placement names no location for it)."""

    chunk_index: int
    share_index: int
    share: str
    node: str | None
    reason: str


@dataclass
class CheckReport:
    """The state of one stored dataset version (after repair, for :meth:`Repairer.repair`).

    ``healthy`` is true when every share of every chunk is verified on a live node,
    with the ``n`` shares of each chunk on ``n`` distinct nodes.
    """

    manifest_hash: bytes
    chunks: int = 0
    expected: int = 0
    shares_verified: int = 0
    problems: list[ShareProblem] = field(default_factory=list)
    rebuilt: int = 0
    unrecoverable_chunks: list[int] = field(default_factory=list)
    placement: PlacementRecord | None = None
    placement_hash: bytes | None = None
    dead_nodes: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """True if nothing is missing, corrupt or unrecoverable (after any rebuild)."""
        return not self.unrecoverable_chunks and self.shares_verified == self.expected


RepairReport = CheckReport


class Repairer:
    """Checks and repairs dataset versions stored on ``nodes``."""

    def __init__(
        self,
        nodes: Sequence[str],
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        signer: LocalAccount | WriteSigner | None = None,
        avoid: Collection[str] = (),
        place_on: Collection[str] | None = None,
    ) -> None:
        self.client = AsyncStorageClient(nodes, concurrency, timeout, signer=signer)
        # Nodes read from but moved away from (a deal node slashed or leaving): their
        # shares help rebuild, are re-placed elsewhere, and the new placement
        # record names them nowhere.
        self.avoid = frozenset(avoid)
        # Rebuilt shares go only to these nodes (None: any healthy node), e.g. nodes
        # holding nothing of the dataset yet, so a new deal can pay them for exactly
        # what they were given.
        self.place_on = None if place_on is None else frozenset(place_on)

    def check(self, manifest_hash: bytes, progress: Progress | None = None) -> CheckReport:
        """Verify every share where the current placement says it is; change nothing.

        ``progress(chunks_done, chunks)`` is called as chunks are checked."""
        return asyncio.run(self.check_async(manifest_hash, progress))

    def repair(self, manifest_hash: bytes, progress: Progress | None = None) -> CheckReport:
        """Rebuild and re-place every missing or corrupt share; write a new placement
        record if anything moved. Raises :class:`RepairError` if some chunk cannot be
        brought back to ``n`` shares on distinct healthy nodes (the report is on the
        exception's ``report``); ``progress`` as for :meth:`check`."""
        return asyncio.run(self.repair_async(manifest_hash, progress))

    async def check_async(
        self, manifest_hash: bytes, progress: Progress | None = None
    ) -> CheckReport:
        """See :meth:`check`."""
        return await self._run(manifest_hash, fix=False, progress=progress)

    async def repair_async(
        self, manifest_hash: bytes, progress: Progress | None = None
    ) -> CheckReport:
        """See :meth:`repair`."""
        return await self._run(manifest_hash, fix=True, progress=progress)

    async def _run(
        self, manifest_hash: bytes, fix: bool, progress: Progress | None = None
    ) -> CheckReport:
        client = self.client
        report = CheckReport(manifest_hash)
        async with client.session() as session:
            reading = DownloadReport(manifest_hash)
            verified = await fetch_manifest(session, manifest_hash, reading)
            m = verified.manifest
            report.chunks = m.chunk_count
            report.expected = m.chunk_count * m.n
            old = await fetch_placement(session, verified)
            health = await node_health(session)
            live = [n for n, h in health.items() if isinstance(h, dict)]
            report.dead_nodes = {n: h for n, h in health.items() if isinstance(h, str)}
            locations = _Placed(verified)
            semaphore = asyncio.Semaphore(_CHUNK_WINDOW)
            done = 0

            async def one(index: int) -> None:
                nonlocal done
                try:
                    await self._chunk(session, verified, index, old, live, fix, report, locations)
                finally:
                    semaphore.release()
                    verified.forget(index)
                done += 1
                if progress is not None:
                    progress(done, m.chunk_count)

            # Chunks in order, a window at a time: a paged manifest's pages are read
            # as they are reached, and only the window's chunk records are held.
            running: set[asyncio.Task[None]] = set()
            errors: list[BaseException] = []

            def finished(task: asyncio.Task[None]) -> None:
                running.discard(task)
                if not task.cancelled() and task.exception() is not None:
                    errors.append(task.exception())  # type: ignore[arg-type]

            records = chunk_records(session, verified, reading, hold=True)
            try:
                async for index, _ in records:
                    await semaphore.acquire()
                    if errors:
                        semaphore.release()
                        break
                    task = asyncio.create_task(one(index))
                    running.add(task)
                    task.add_done_callback(finished)
                await asyncio.gather(*running, return_exceptions=True)
            finally:
                await records.aclose()
                for task in running:
                    task.cancel()
            if errors:
                raise errors[0]
            report.placement = old
            report.placement_hash = old.digest() if old is not None else None
            changed = not locations.same_as(old)
            if fix and changed:
                # Every node that may now hold shares gets the manifest too: a node
                # keeping only recorded data (storage/retention.py) finds a version's
                # shares through the manifest it holds.
                # A paged manifest's pages go first, as the uploader stores them.
                if verified.paged:
                    await _copy_pages(session, verified, reading, live)
                raw_manifest = m.to_bytes()
                for node in live:
                    with contextlib.suppress(NodeFailure):
                        await session.put(node, manifest_hash.hex(), raw_manifest)
                if old is not None and old.sequence >= MAX_SEQUENCE:
                    raise _failed(
                        "the placement sequence is exhausted: no later record can be written",
                        report,
                    )
                sequence = old.sequence + 1 if old is not None else 0
                record = locations.record(verified, sequence)
                raw = record.to_bytes()
                stored = 0
                for node in live:
                    if node in self.avoid:
                        continue
                    try:
                        await session.put(node, record.digest().hex(), raw, "placements")
                        stored += 1
                    except NodeFailure:
                        continue
                if not stored:
                    raise _failed("no healthy node accepted the new placement record", report)
                report.placement = record
                report.placement_hash = record.digest()
        if fix and not report.healthy:
            raise _failed(
                f"{len(report.unrecoverable_chunks)} chunks could not be restored to "
                f"{m.n} shares on distinct healthy nodes",
                report,
            )
        return report

    async def _chunk(
        self,
        session: Session,
        verified: VerifiedManifest,
        index: int,
        old: PlacementRecord | None,
        live: list[str],
        fix: bool,
        report: CheckReport,
        locations: _Placed,
    ) -> None:
        m = verified.manifest
        hashes = verified.chunk(index).shares
        good: dict[int, VerifiedShare] = {}
        holders: dict[int, list[str]] = {}

        async def verify_at(number: int, node: str) -> bool:
            share = hashes[number]
            try:
                response = await session.get(node, f"shares/{share.hex()}")
            except NodeFailure as failure:
                report.problems.append(
                    ShareProblem(index, number, share.hex(), node, failure.reason)
                )
                return False
            if response is None:
                report.problems.append(ShareProblem(index, number, share.hex(), node, "missing"))
                return False
            try:
                good[number] = verified.verify_share(index, number, response.content)
            except IntegrityError as exc:
                report.problems.append(
                    ShareProblem(index, number, share.hex(), node, f"corrupt: {exc}")
                )
                return False
            holders.setdefault(number, []).append(node)
            return True

        checks: list[Coroutine[Any, Any, bool]] = []
        for number, share in enumerate(hashes):
            where = old.where_at(index * m.n + number, share) if old is not None else ()
            for node in where:
                if node not in session.nodes:
                    # Never send requests to whatever a record lists.
                    report.problems.append(
                        ShareProblem(index, number, share.hex(), node, "not a known node")
                    )
            where = tuple(node for node in where if node in session.nodes)
            if not where:
                report.problems.append(
                    ShareProblem(index, number, share.hex(), None, "no known location")
                )
            checks.extend(verify_at(number, node) for node in where)
        await asyncio.gather(*checks)
        if fix and len(good) < m.k:
            # The placement may be stale: look for the missing shares on every node.
            await asyncio.gather(
                *(
                    verify_at(number, node)
                    for number in range(m.n)
                    if number not in good
                    for node in live
                    if node not in holders.get(number, ())
                )
            )
        # A location counts once per chunk: keep the first holder of each share on a
        # node, so no node ends up listed for two shares of this chunk.
        used: set[str] = set()
        for number in sorted(holders):
            kept = [n for n in holders[number] if n not in used and n in live]
            if not kept:
                good.pop(number, None)
            kept = [n for n in kept if n not in self.avoid]  # still good to rebuild from
            used.update(kept)
            holders[number] = kept
        missing = [number for number in range(m.n) if not holders.get(number)]
        if fix and missing:
            if len(good) < m.k:
                report.unrecoverable_chunks.append(index)
            else:
                rebuilt = rebuild_shares(verified, index, list(good.values())[: m.k], missing)
                spare = [
                    n
                    for n in _rotated(live, index)
                    if n not in used
                    and n not in self.avoid
                    and (self.place_on is None or n in self.place_on)
                ]

                async def place(number: int, fresh: Share) -> None:
                    # Each missing share takes the next spare node; a refused batch
                    # sends it on to the next one.
                    while spare:
                        node = spare.pop(0)
                        try:
                            await session.puts.submit(node, fresh)
                        except NodeFailure:
                            continue
                        holders[number] = [node]
                        used.add(node)
                        report.rebuilt += 1
                        return

                await asyncio.gather(
                    *(place(number, fresh) for number, fresh in zip(missing, rebuilt, strict=True))
                )
                if any(not holders.get(number) for number in missing):
                    report.unrecoverable_chunks.append(index)
        for number, share in enumerate(hashes):
            if holders.get(number):
                locations.put(index * m.n + number, share, holders[number])
                report.shares_verified += 1


class _Placed:
    """Where repair found or put each share: share -> nodes for a single-document
    manifest (a version-1 record), 2 bytes a share for a paged one (version 2,
    the first holder of each share)."""

    def __init__(self, verified: VerifiedManifest) -> None:
        m = verified.manifest
        self.paged = verified.paged
        self.by_share: dict[bytes, list[str]] = {}
        self.ids: dict[str, int] = {}
        self.holders = array("H", [0]) * (m.chunk_count * m.n if self.paged else 0)

    def put(self, leaf: int, share: bytes, nodes: list[str]) -> None:
        if self.paged:
            self.holders[leaf] = self.ids.setdefault(nodes[0], len(self.ids) + 1)
        else:
            self.by_share[share] = nodes

    def record(self, verified: VerifiedManifest, sequence: int) -> PlacementRecord:
        if self.paged:
            return PlacementRecord.create_positional(
                verified, list(self.ids), pack_holders(self.holders), sequence
            )
        return PlacementRecord.create(verified, self.by_share, sequence)

    def same_as(self, old: PlacementRecord | None) -> bool:
        """True if ``old`` places every share as found now (nothing to write)."""
        if old is None:
            return False
        if not self.paged or old.format_version != POSITIONAL_VERSION:
            return {h: tuple(w) for h, w in self.by_share.items()} == dict(old.locations)
        # The old record's node numbers in this one's numbering (-1: not here).
        mapping = [0] + [self.ids.get(loc, -1) for loc in old.nodes]
        if -1 in mapping:
            return False
        return array("H", (mapping[j] for j in holder_ids(old.holders))) == self.holders


async def _copy_pages(
    session: Session, verified: VerifiedManifest, reading: DownloadReport, nodes: list[str]
) -> None:
    """Put every page of a paged manifest on ``nodes`` (one page held at a time)."""
    tree = verified.manifest.tree
    assert tree is not None

    async def fetch(ref: PageRef, level: int, first: int, count: int) -> VerifiedPage:
        return await fetch_page(session, verified, reading, ref, level, first, count)

    async for page in walk_pages(tree, fetch):
        for node in nodes:
            with contextlib.suppress(NodeFailure):
                await session.put(node, page.address.hex(), page.raw)


def _rotated(nodes: list[str], index: int) -> list[str]:
    if not nodes:
        return []
    start = index % len(nodes)
    return nodes[start:] + nodes[:start]


def _failed(message: str, report: CheckReport) -> RepairError:
    return RepairError(f"repair of {report.manifest_hash.hex()}: {message}", report)
