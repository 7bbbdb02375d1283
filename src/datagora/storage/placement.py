"""Placement records (``datagora.placement``, format versions 1 and 2): where shares live.

Version 2 is written for paged manifests (format 4): instead of a map from share
address to locations it lists the nodes once and, per Merkle leaf, the index of
the node holding that share (2 bytes a share), so the record of a 1 TiB dataset
is about 17 MB instead of 600 MB, and is checked without reading the pages.

The manifest's hash is on chain and immutable, but repair moves shares; so where
each share is stored lives in a separate, versioned record. A placement record
names one manifest (by hash), maps share hashes to node locations, and carries a
``sequence`` number: the record with the highest sequence is the current one. It
is canonical JSON, addressed by its SHA-256 and stored on nodes like a share.

Placement is only a hint: readers verify every share by hash against the verified
manifest, and fall back to asking every node when a hint is wrong or missing. A
record is checked against its manifest (:meth:`PlacementRecord.check`) before use.
Schema: ``docs/formats.md``, "Placement record".
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from datagora.crypto.aead import DATASET_ID_SIZE, MAX_VERSION
from datagora.storage.canonical import (
    canonical_json,
    check_fields,
    check_hex,
    check_int,
    loads_strict,
)
from datagora.storage.errors import ManifestError, PlacementError
from datagora.storage.manifest import ChunkRecord, VerifiedManifest

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_LOCATION_CHARS",
    "MAX_PLACEMENT_BYTES",
    "POSITIONAL_VERSION",
    "PlacementRecord",
    "holder_ids",
    "pack_holders",
    "parse_placement",
    "verify_placement",
    "verify_placement_names",
]

FORMAT: Final = "datagora.placement"
FORMAT_VERSION: Final = 1
POSITIONAL_VERSION: Final = 2
MAX_NODES: Final = 2**16 - 1
MAX_LOCATION_CHARS: Final = 2048
MAX_SEQUENCE: Final = 2**63 - 1
MAX_PLACEMENT_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class PlacementRecord:
    """Where the shares of one manifest are stored, as of ``sequence``."""

    dataset_id: bytes
    version: int
    manifest_hash: bytes
    sequence: int
    locations: Mapping[bytes, tuple[str, ...]]
    """Version 1: share address -> locations. Empty in version 2."""
    format_version: int = FORMAT_VERSION
    nodes: tuple[str, ...] = ()
    """Version 2: the locations, each listed once."""
    holders: bytes = b""
    """Version 2: per Merkle leaf, uint16_be: 0 unknown, ``j`` = ``nodes[j - 1]``."""

    def __post_init__(self) -> None:
        if not isinstance(self.dataset_id, bytes) or len(self.dataset_id) != DATASET_ID_SIZE:
            raise PlacementError(f"dataset_id must be {DATASET_ID_SIZE} bytes")
        if not isinstance(self.manifest_hash, bytes) or len(self.manifest_hash) != 32:
            raise PlacementError("manifest_hash must be 32 bytes")
        try:
            check_int("version", self.version, 0, MAX_VERSION)
            check_int("sequence", self.sequence, 0, MAX_SEQUENCE)
        except ManifestError as exc:
            raise PlacementError(str(exc)) from None
        if self.format_version not in (FORMAT_VERSION, POSITIONAL_VERSION):
            raise PlacementError(f"placement format_version {self.format_version} is not supported")
        if self.format_version == POSITIONAL_VERSION:
            self._check_positional()
        elif self.nodes or self.holders:
            raise PlacementError("a version-1 placement record has no nodes or holders")
        for h, where in self.locations.items():
            if not isinstance(h, bytes) or len(h) != 32:
                raise PlacementError("placement keys are 32-byte share hashes")
            if not where or len(set(where)) != len(where):
                raise PlacementError(f"placement of share {h.hex()}: need distinct locations")
            for loc in where:
                if not isinstance(loc, str) or not 0 < len(loc) <= MAX_LOCATION_CHARS:
                    raise PlacementError(
                        f"placement of share {h.hex()}: a location is a non-empty string "
                        f"of at most {MAX_LOCATION_CHARS} characters"
                    )

    def _check_positional(self) -> None:
        if self.locations:
            raise PlacementError("a version-2 placement record lists nodes and holders only")
        if len(self.nodes) > MAX_NODES or len(set(self.nodes)) != len(self.nodes):
            raise PlacementError(f"placement nodes: at most {MAX_NODES}, each listed once")
        for loc in self.nodes:
            if not isinstance(loc, str) or not 0 < len(loc) <= MAX_LOCATION_CHARS:
                raise PlacementError(
                    f"a placement location is a non-empty string of at most "
                    f"{MAX_LOCATION_CHARS} characters"
                )
        if not isinstance(self.holders, bytes) or len(self.holders) % 2:
            raise PlacementError("placement holders are 2 bytes a share")
        if self.holders and max(holder_ids(self.holders)) > len(self.nodes):
            raise PlacementError("placement holders name a node that is not listed")

    @classmethod
    def create_positional(
        cls,
        verified: VerifiedManifest,
        nodes: Sequence[str],
        holders: bytes,
        sequence: int = 0,
    ) -> PlacementRecord:
        """A version-2 record (for a paged manifest): ``holders`` gives, per leaf, 0 or
        1 + the index in ``nodes`` of the node holding that share. Checked against the
        manifest; nodes no share names are left out."""
        used = sorted(set(holder_ids(holders)) - {0})
        renumber = {old: new + 1 for new, old in enumerate(used)}
        renumber[0] = 0
        packed = pack_holders(array("H", (renumber[j] for j in holder_ids(holders))))
        m = verified.manifest
        record = cls(
            dataset_id=m.dataset_id,
            version=m.version,
            manifest_hash=verified.digest,
            sequence=sequence,
            locations={},
            format_version=POSITIONAL_VERSION,
            nodes=tuple(nodes[j - 1] for j in used),
            holders=packed,
        )
        record.check(verified)
        return record

    def where_leaf(self, leaf: int) -> tuple[str, ...]:
        """Version 2: the location of the share at Merkle leaf ``leaf`` (empty if unknown)."""
        if not 0 <= 2 * leaf < len(self.holders):
            return ()
        j = int.from_bytes(self.holders[2 * leaf : 2 * leaf + 2], "big")
        return (self.nodes[j - 1],) if j else ()

    def where_at(self, leaf: int, share: bytes) -> tuple[str, ...]:
        """The locations of ``share``, which sits at Merkle leaf ``leaf``, in either version."""
        if self.format_version == POSITIONAL_VERSION:
            return self.where_leaf(leaf)
        return self.locations.get(share, ())

    def all_locations(self) -> set[str]:
        """Every location the record names."""
        if self.format_version == POSITIONAL_VERSION:
            return set(self.nodes)
        return {loc for where in self.locations.values() for loc in where}

    @classmethod
    def create(
        cls,
        verified: VerifiedManifest,
        locations: Mapping[bytes, Sequence[str]],
        sequence: int = 0,
    ) -> PlacementRecord:
        """A record for ``verified``'s shares; checked against the manifest.

        Shares with no known location are left out. For a paged (format-4) manifest
        the writer built ``locations`` from the pages it verified, so the check
        against every page is left to readers (:meth:`check` with ``chunks``).
        """
        m = verified.manifest
        record = cls(
            dataset_id=m.dataset_id,
            version=m.version,
            manifest_hash=verified.digest,
            sequence=sequence,
            locations={h: tuple(where) for h, where in locations.items() if where},
        )
        if not verified.paged:
            record.check(verified)
        return record

    def check(
        self,
        verified: VerifiedManifest,
        chunks: Iterable[tuple[int, ChunkRecord]] | None = None,
    ) -> None:
        """Raise :class:`PlacementError` unless this record fits ``verified``: same
        manifest, dataset and version, only listed shares, and no location holding
        two shares of one chunk. A paged (format-4) manifest needs ``chunks``: every
        ``(chunk_index, record)`` in order, from its verified pages."""
        m = verified.manifest
        self.check_names(verified)
        if self.format_version == POSITIONAL_VERSION:
            self._check_holders(verified)
            return
        if chunks is None:
            if verified.paged:
                raise PlacementError("checking a placement of a paged manifest needs its pages")
            for h in self.locations:
                if m.share_position(h) is None:
                    raise PlacementError(f"placement names share {h.hex()}, which is not listed")
            chunks = enumerate(m.chunks)
        self.check_listed(sum(self._check_chunk(i, chunk) for i, chunk in chunks))

    def _check_holders(self, verified: VerifiedManifest) -> None:
        m = verified.manifest
        leaves = m.chunk_count * m.n
        if len(self.holders) != 2 * leaves:
            raise PlacementError(
                f"placement holders list {len(self.holders) // 2} shares, the manifest {leaves}"
            )
        ids = holder_ids(self.holders)
        for i in range(m.chunk_count):
            row = [j for j in ids[i * m.n : (i + 1) * m.n] if j]
            if len(set(row)) != len(row):
                raise PlacementError(f"chunk {i}: a location holds two shares of one chunk")

    def check_names(self, verified: VerifiedManifest) -> None:
        """The first part of :meth:`check`: same manifest, dataset and version."""
        m = verified.manifest
        if self.manifest_hash != verified.digest:
            raise PlacementError("placement record is for another manifest")
        if self.dataset_id != m.dataset_id or self.version != m.version:
            raise PlacementError("placement record names another dataset version")

    def check_chunk(self, index: int, chunk: ChunkRecord) -> int:
        if self.format_version == POSITIONAL_VERSION:
            raise PlacementError("a version-2 placement record is checked whole (check)")
        return self._check_chunk(index, chunk)

    def _check_chunk(self, index: int, chunk: ChunkRecord) -> int:
        """Check one chunk (no location with two of its shares); returns how many of
        its shares the record places. For checking page by page."""
        seen: set[str] = set()
        listed = 0
        for h in chunk.shares:
            for loc in self.locations.get(h, ()):
                if loc in seen:
                    raise PlacementError(
                        f"chunk {index}: location {loc!r} holds two shares of one chunk"
                    )
                seen.add(loc)
            listed += h in self.locations
        return listed

    def check_listed(self, listed: int) -> None:
        """The last part of :meth:`check`: every placed share was met in the chunks."""
        if listed != len(self.locations):
            raise PlacementError("placement names shares the manifest does not list")

    def where(self, share: bytes) -> tuple[str, ...]:
        """The locations of ``share`` (empty if unknown)."""
        return self.locations.get(share, ())

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (the schema of ``docs/formats.md``)."""
        if self.format_version == POSITIONAL_VERSION:
            return {
                "format": FORMAT,
                "format_version": POSITIONAL_VERSION,
                "dataset_id": self.dataset_id.hex(),
                "version": self.version,
                "manifest_hash": self.manifest_hash.hex(),
                "sequence": self.sequence,
                "nodes": list(self.nodes),
                "holders": base64.b64encode(self.holders).decode("ascii"),
            }
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dataset_id": self.dataset_id.hex(),
            "version": self.version,
            "manifest_hash": self.manifest_hash.hex(),
            "sequence": self.sequence,
            "placement": {h.hex(): list(where) for h, where in self.locations.items()},
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes; their SHA-256 is the record's address."""
        return canonical_json(self.to_json())

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).digest()


def parse_placement(data: bytes) -> PlacementRecord:
    """Parse placement-record bytes strictly (canonical form only), without checking
    them against a manifest. Raises :class:`PlacementError`."""
    if len(data) > MAX_PLACEMENT_BYTES:
        raise PlacementError(f"placement record is larger than {MAX_PLACEMENT_BYTES} bytes")
    try:
        return _parse(data)
    except ManifestError as exc:
        raise PlacementError(f"placement record: {exc}") from None


def _parse(data: bytes) -> PlacementRecord:
    try:
        obj = loads_strict(data.decode("ascii"))
    except UnicodeDecodeError:
        raise PlacementError("a placement record is ASCII JSON") from None
    except json.JSONDecodeError as exc:
        raise PlacementError(f"placement record is not valid JSON: {exc.msg}") from None
    positional = isinstance(obj, dict) and obj.get("format_version") == POSITIONAL_VERSION
    top = check_fields(
        obj,
        "placement record",
        {"format", "format_version", "dataset_id", "version", "manifest_hash", "sequence",
         *(("nodes", "holders") if positional else ("placement",))},
    )  # fmt: skip
    if top["format"] != FORMAT:
        raise PlacementError(f"format must be {FORMAT!r}, got {top['format']!r}")
    if (
        top["format_version"] not in (FORMAT_VERSION, POSITIONAL_VERSION)
        or type(top["format_version"]) is not int
    ):
        raise PlacementError(
            f"placement format_version {top['format_version']!r} is not supported "
            f"(this datagora reads versions {FORMAT_VERSION} and {POSITIONAL_VERSION})"
        )
    if positional:
        nodes, holders = top["nodes"], top["holders"]
        if not isinstance(nodes, list) or not all(isinstance(x, str) for x in nodes):
            raise PlacementError("placement nodes must be an array of strings")
        if not isinstance(holders, str):
            raise PlacementError("placement holders must be a base64 string")
        try:
            raw_holders = base64.b64decode(holders, validate=True)
        except ValueError:
            raise PlacementError("placement holders are not valid base64") from None
        record = PlacementRecord(
            dataset_id=check_hex(top["dataset_id"], "dataset_id", DATASET_ID_SIZE),
            version=check_int("version", top["version"], 0, MAX_VERSION),
            manifest_hash=check_hex(top["manifest_hash"], "manifest_hash", 32),
            sequence=check_int("sequence", top["sequence"], 0, MAX_SEQUENCE),
            locations={},
            format_version=POSITIONAL_VERSION,
            nodes=tuple(nodes),
            holders=raw_holders,
        )
        if record.to_bytes() != data:
            raise PlacementError("placement record is not in canonical form")
        return record
    if not isinstance(top["placement"], dict):
        raise PlacementError("placement must be a JSON object")
    locations: dict[bytes, tuple[str, ...]] = {}
    for name, where in top["placement"].items():
        if not isinstance(where, list) or not all(isinstance(x, str) for x in where):
            raise PlacementError(f"placement of {name}: must be an array of strings")
        locations[check_hex(name, "placement key", 32)] = tuple(where)
    record = PlacementRecord(
        dataset_id=check_hex(top["dataset_id"], "dataset_id", DATASET_ID_SIZE),
        version=check_int("version", top["version"], 0, MAX_VERSION),
        manifest_hash=check_hex(top["manifest_hash"], "manifest_hash", 32),
        sequence=check_int("sequence", top["sequence"], 0, MAX_SEQUENCE),
        locations=locations,
    )
    if record.to_bytes() != data:
        raise PlacementError("placement record is not in canonical form")
    return record


def verify_placement(
    data: bytes,
    expected_sha256: bytes,
    verified: VerifiedManifest,
    chunks: Iterable[tuple[int, ChunkRecord]] | None = None,
) -> PlacementRecord:
    """Check ``data`` against its hash, parse it, and check it fits ``verified``
    (a paged manifest's chunks given as for :meth:`PlacementRecord.check`)."""
    if hashlib.sha256(data).digest() != expected_sha256:
        raise PlacementError(
            f"placement record does not match the expected hash {expected_sha256.hex()}"
        )
    record = parse_placement(data)
    record.check(verified, chunks)
    return record


def verify_placement_names(
    data: bytes, expected_sha256: bytes, verified: VerifiedManifest
) -> PlacementRecord:
    """Check ``data`` against its hash, parse it and check its names against
    ``verified``; the caller then checks each chunk of a paged manifest as it reads
    the pages (:meth:`PlacementRecord.check_chunk`, :meth:`PlacementRecord.check_listed`)."""
    if hashlib.sha256(data).digest() != expected_sha256:
        raise PlacementError(
            f"placement record does not match the expected hash {expected_sha256.hex()}"
        )
    record = parse_placement(data)
    record.check_names(verified)
    return record


def holder_ids(holders: bytes) -> array[int]:
    """The uint16_be entries, as a compact array (2 bytes each in memory too)."""
    ids = array("H", holders)
    if sys.byteorder == "little":
        ids.byteswap()
    return ids


def pack_holders(ids: array[int]) -> bytes:
    """The inverse of :func:`holder_ids`: uint16_be bytes."""
    out = array("H", ids)
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()
