"""On-chain retention for storage nodes: keep only what the ledger records.

A storage node started with ``--require-onchain-record`` stores what it is given,
as always, but keeps it only if the ledger refers to it within a grace period
(one hour by default). Uploads cannot be refused up front: a dataset's manifest
hash and Merkle root are only known once every share has been encoded, so the
publishing transaction always follows the upload. So the node sweeps instead:

- A **manifest** is recorded when its SHA-256 is the manifest hash of a
  ``DatasetCreated`` or ``DatasetUpdated`` event (``DataNFT``) or the content hash
  of a ``KeySet`` event (``KeyValueStore``, for key/value records too large to
  go on chain). Every share that a recorded manifest *held by this node* lists is
  kept. A paged manifest (format 4) is read page by page from the node's own
  store: its pages are kept, and the shares they list that the node holds.
- A **metadata document** is recorded when its SHA-256 is a dataset's metadata
  hash; the mock data its ``mock.sha256`` names is kept with it.
- A **placement record** is kept when the manifest it places is recorded and
  the node indexed it as a placement record (``PUT /placements``, which checks
  it against the manifest, the sequence and the controller); the same bytes
  stored as a plain blob pin nothing.

Anything else older than the grace period is deleted: the shares of a publish
whose transaction never came, blobs nobody refers to. Old versions stay
recorded (an update keeps the old hashes in the chain's history), so updates
never delete earlier versions. If the chain cannot be read, nothing is deleted.

The sweep needs only reads: event logs from the deployment's start block, read
incrementally. A node that holds shares of a recorded version but not its
manifest cannot tell them from junk, so writers (upload, repair) put the
manifest on every node they place shares on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from datagora.ledger.errors import ChainError
from datagora.storage.errors import IntegrityError, ManifestError, PlacementError
from datagora.storage.manifest import MAX_MANIFEST_BYTES, VerifiedManifest, verify_manifest
from datagora.storage.pages import PageRef, VerifiedPage, verify_page, walk_pages_sync
from datagora.storage.placement import MAX_PLACEMENT_BYTES, parse_placement
from datagora.storage.shares import SHARE_MAGICS

if TYPE_CHECKING:
    from datagora.ledger import Chain, Deployment, Ledger

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "OnChainReferences",
    "Retention",
    "RetentionStore",
    "StoredEntry",
    "SweepReport",
]

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS: Final = 3600.0
DEFAULT_SWEEP_EVERY: Final = 60.0
# Blobs parsed while sweeping are documents; a bigger one is not a manifest,
# metadata document or placement record, whatever it claims. The manifest limit
# is the one uploads and nodes use (storage/limits.py): a node keeps every
# manifest it was able to accept.
_MAX_DOCUMENT_BYTES: Final = max(MAX_MANIFEST_BYTES, MAX_PLACEMENT_BYTES)
_PAGE: Final = 2_000


class StoredEntry(Protocol):
    """One stored blob as the sweep sees it (:class:`datagora.storage.packs.Entry`)."""

    @property
    def name(self) -> bytes: ...

    @property
    def length(self) -> int: ...

    @property
    def dataset(self) -> bytes | None:
        """The dataset id of a share's header; None for documents."""

    @property
    def stored_at(self) -> int: ...


class RetentionStore(Protocol):
    """What the sweep needs from a node's store (:class:`datagora.storage.packs.PackStore`)."""

    def entries(self) -> Sequence[StoredEntry]: ...

    def read(self, name: bytes) -> bytes | None: ...

    def delete(self, names: Iterable[bytes], stored_before: int | None = None) -> int: ...

    def placements(self, manifest: bytes) -> list[tuple[bytes, int]]:
        """(record name, sequence) of the placement records indexed for ``manifest``."""
        ...


class OnChainReferences:
    """The storage hashes the ledger records, read incrementally from event logs."""

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        self.chain = chain
        self.manifests: set[bytes] = set()
        self.documents: set[bytes] = set()
        self.datasets: dict[bytes, int] = {}  # manifest hash -> the dataset it is a version of
        self._contracts = {name: deployment.address(name) for name in ("DataNFT", "KeyValueStore")}
        self._next_block = deployment.start_block

    @classmethod
    def of(cls, ledger: Ledger) -> OnChainReferences:
        """The references recorded by ``ledger``'s deployment."""
        return cls(ledger.chain, ledger.deployment)

    def refresh(self) -> int:
        """Read events up to the chain's head; returns the head read to. Raises
        :class:`~datagora.ledger.ChainError` if the chain cannot be read."""
        from datagora.ledger import EventReader

        reader = EventReader(self.chain, self._contracts)
        head = self.chain.block_number
        if head < self._next_block:
            return head
        for event in reader.read(self._next_block, head, page=_PAGE):
            self._note(event.name, event.args)
        self._next_block = head + 1
        return head

    def _note(self, name: str, args: Mapping[str, Any]) -> None:
        if name == "DatasetCreated":
            self._add(self.manifests, args["manifest_hash"])
            self._add(self.documents, args["metadata_hash"])
            self.datasets[bytes(args["manifest_hash"])] = int(args["dataset"])
        elif name == "DatasetUpdated":
            self._add(self.manifests, args["new_manifest_hash"])
            self._add(self.documents, args["new_metadata_hash"])
            self.datasets[bytes(args["new_manifest_hash"])] = int(args["dataset"])
        elif name == "KeySet":
            self._add(self.manifests, args["content_hash"])

    @staticmethod
    def _add(into: set[bytes], value: Any) -> None:
        raw = bytes(value)
        if raw != bytes(32):
            into.add(raw)


@dataclass
class SweepReport:
    """What one sweep did."""

    at: float
    head: int = -1
    checked: int = 0
    kept: int = 0
    pending: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    error: str | None = None
    deleted_names: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "head": self.head,
            "checked": self.checked,
            "kept": self.kept,
            "pending": self.pending,
            "deleted": self.deleted,
            "deleted_bytes": self.deleted_bytes,
            "error": self.error,
        }


class Retention:
    """Deletes what the ledger does not refer to, ``grace`` seconds after storing it."""

    def __init__(
        self,
        references: OnChainReferences,
        grace: float = DEFAULT_GRACE_SECONDS,
        every: float = DEFAULT_SWEEP_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if grace < 0 or every <= 0:
            raise ValueError("the grace period must be >= 0 and the sweep interval > 0")
        self.references = references
        self.grace = grace
        self.every = every
        self.clock = clock
        self.last: SweepReport | None = None
        self._listed: dict[bytes, frozenset[bytes]] = {}  # manifest -> the shares it lists

    def sweep(self, store: RetentionStore) -> SweepReport:
        """One pass: refresh the chain's references, then delete what is unrecorded
        and older than the grace period. Never deletes when the chain is unreadable."""
        now = self.clock()
        report = SweepReport(at=now)
        try:
            report.head = self.references.refresh()
        except (ChainError, OSError, ValueError) as exc:  # keep everything
            report.error = f"the chain could not be read, nothing deleted: {exc}"
            log.warning("retention sweep skipped: %s", report.error)
            self.last = report
            return report
        entries = store.entries()
        kept = self._kept(store, entries)
        doomed: list[StoredEntry] = []
        for entry in entries:
            report.checked += 1
            if entry.name in kept:
                report.kept += 1
            elif now - entry.stored_at < self.grace:
                report.pending += 1
            else:
                doomed.append(entry)
        if doomed:
            # Only what is still past the grace period when deleted: a blob uploaded
            # again meanwhile starts its grace period afresh.
            cutoff = int(now - self.grace) + 1
            report.deleted = store.delete([e.name for e in doomed], stored_before=cutoff)
            report.deleted_bytes = sum(e.length for e in doomed)
            report.deleted_names = [e.name.hex() for e in doomed]
            log.info("retention: deleted %d unrecorded blob(s)", report.deleted)
        self.last = report
        return report

    def _kept(self, store: RetentionStore, entries: Sequence[StoredEntry]) -> set[bytes]:
        refs = self.references
        held = {e.name for e in entries}
        kept: set[bytes] = set()
        for manifest in refs.manifests & held:
            listed = self._listed.get(manifest)
            if listed is None:
                raw = store.read(manifest)
                if raw is None or len(raw) > MAX_MANIFEST_BYTES:
                    continue
                try:
                    verified = verify_manifest(raw, manifest)
                except ManifestError:
                    continue
                if verified.paged:
                    # Too large to cache whole: read again each sweep, one page at
                    # a time, keeping only what this node holds.
                    kept.add(manifest)
                    kept.update(_paged_listing(store, verified, held))
                    continue
                # A manifest is content-addressed: what it lists never changes.
                listed = frozenset(s for c in verified.manifest.chunks for s in c.shares)
                self._listed[manifest] = listed
            kept.add(manifest)
            kept.update(listed)
        for document in refs.documents & held:
            kept.add(document)
            mock = _mock_hash(store.read(document))
            if mock is not None:
                kept.add(mock)
        # Placement records: the remaining small blobs that parse as one.
        # Only blobs past the grace period can be deleted, so only they are read.
        for entry in entries:
            if (
                entry.name in kept
                or entry.dataset is not None
                or entry.length > _MAX_DOCUMENT_BYTES
            ):
                continue
            if self.clock() - entry.stored_at < self.grace:
                continue
            raw = store.read(entry.name)
            if raw is None or raw.startswith(SHARE_MAGICS):
                continue
            try:
                record = parse_placement(raw)
            except PlacementError:
                continue
            # Only a record the node indexed (a checked PUT /placements) counts: a
            # look-alike stored as a plain blob pins nothing.
            if record.manifest_hash in refs.manifests and entry.name in {
                name for name, _ in store.placements(record.manifest_hash)
            }:
                kept.add(entry.name)
        return kept


def _paged_listing(
    store: RetentionStore, verified: VerifiedManifest, held: set[bytes]
) -> set[bytes]:
    """The pages of a paged manifest and the held shares they list. A page missing
    or corrupt here ends the walk (what it would list cannot be told from junk)."""
    tree = verified.manifest.tree
    assert tree is not None
    found: set[bytes] = set()

    def fetch(ref: PageRef, level: int, first: int, count: int) -> VerifiedPage:
        raw = store.read(ref.address)
        if raw is None:
            raise IntegrityError(f"manifest page {ref.address.hex()} is not on this node")
        return verify_page(raw, ref, tree, level, first, count)

    try:
        for page in walk_pages_sync(tree, fetch):
            found.add(page.address)
            if page.level == 0:
                leaves = bytes(page.leaves())
                for i in range(0, len(leaves), 32):
                    if leaves[i : i + 32] in held:
                        found.add(leaves[i : i + 32])
    except IntegrityError as exc:
        log.warning("retention: manifest %s: %s", verified.digest.hex(), exc)
    return found


def _mock_hash(raw: bytes | None) -> bytes | None:
    if raw is None or len(raw) > _MAX_DOCUMENT_BYTES:
        return None
    try:
        doc = json.loads(raw)
        value = doc["mock"]["sha256"]
        return bytes.fromhex(value) if isinstance(value, str) and len(value) == 64 else None
    except (ValueError, KeyError, TypeError):
        return None
