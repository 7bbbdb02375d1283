"""The share batch frame (``datagora.batch.v1``): several named blobs in one body.

One HTTP request per share costs more than hashing and writing the share itself,
so storage nodes also take and serve shares in batches (``PUT /shares``,
``POST /shares/batch-get``). Both bodies use this frame, big-endian:

    magic   4 bytes   b"DGB1"
    count   u32       number of entries, 0 .. MAX_BATCH_SHARES
    count times:
        name    32 bytes  SHA-256 of the entry's bytes
        length  u32       byte length of the entry
        data    length bytes

and nothing after the last entry. The frame carries no verification itself: a
node checks every entry against its name before storing it, a client verifies
what it fetched against its manifest.

:class:`FrameReader` parses a frame incrementally (for bodies streamed to disk)
and enforces caps while parsing; :func:`encode_frame` and :func:`decode_frame`
handle whole frames in memory, :func:`frame_parts` gives a frame as pieces to
send without copying the entries. Pure logic, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from datagora.storage.errors import BatchFormatError, BatchTooLargeError

__all__ = [
    "BATCH_MAGIC",
    "MAX_BATCH_SHARES",
    "EntryData",
    "EntryEnd",
    "EntryStart",
    "FrameReader",
    "decode_frame",
    "encode_frame",
    "frame_parts",
    "frame_size",
]

BATCH_MAGIC: Final = b"DGB1"
MAX_BATCH_SHARES: Final = 1024
_HEAD: Final = struct.Struct(">4sI")
_ENTRY: Final = struct.Struct(">32sI")


@dataclass(frozen=True, slots=True)
class EntryStart:
    """An entry's header was read: its position, 32-byte name and length."""

    index: int
    name: bytes
    length: int


@dataclass(frozen=True, slots=True)
class EntryData:
    """A piece of the current entry's bytes (a view into the fed buffer: copy or
    consume it before feeding more)."""

    data: memoryview


@dataclass(frozen=True, slots=True)
class EntryEnd:
    """The current entry is complete."""

    index: int


Event = EntryStart | EntryData | EntryEnd


def frame_size(lengths: Sequence[int]) -> int:
    """The byte size of a frame holding entries of these lengths."""
    return _HEAD.size + _ENTRY.size * len(lengths) + sum(lengths)


def encode_frame(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    """One frame of ``(32-byte name, data)`` entries, in order."""
    return b"".join(frame_parts(entries))


def frame_parts(entries: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """The frame of :func:`encode_frame` as a list of pieces whose concatenation
    it is; the entries' data are not copied (send the pieces one after another)."""
    if len(entries) > MAX_BATCH_SHARES:
        raise BatchTooLargeError(f"a batch holds at most {MAX_BATCH_SHARES} entries")
    parts = [_HEAD.pack(BATCH_MAGIC, len(entries))]
    for name, data in entries:
        if len(name) != 32:
            raise BatchFormatError("an entry name is a 32-byte SHA-256")
        parts.append(_ENTRY.pack(name, len(data)))
        parts.append(data)
    return parts


class FrameReader:
    """Incremental frame parser with caps: feed body pieces, get events.

    ``max_entry`` caps each entry's length, ``max_total`` the sum of entry lengths
    and ``max_count`` the count; a frame breaking one raises
    :class:`BatchTooLargeError` as soon as its header says so, before its bytes
    arrive. Any other defect raises :class:`BatchFormatError`.
    """

    def __init__(self, max_entry: int, max_total: int, max_count: int = MAX_BATCH_SHARES) -> None:
        self.max_entry = max_entry
        self.max_total = max_total
        self.max_count = min(max_count, MAX_BATCH_SHARES)
        self.count: int | None = None
        self.total = 0
        self._index = 0  # entries fully read
        self._left = 0  # bytes of the current entry still to come
        self._in_entry = False
        self._pending = b""  # an incomplete header

    def feed(self, piece: bytes) -> Iterator[Event]:
        """Parse ``piece``; yields the events it completes, in order."""
        view = memoryview(piece)
        while view:
            if self._in_entry:
                take = min(self._left, len(view))
                yield EntryData(view[:take])
                view = view[take:]
                self._left -= take
                if self._left == 0:
                    self._in_entry = False
                    self._index += 1
                    yield EntryEnd(self._index - 1)
                continue
            if self.count is not None and self._index == self.count:
                raise BatchFormatError("bytes after the last entry of the batch")
            want = _HEAD.size if self.count is None else _ENTRY.size
            need = want - len(self._pending)
            self._pending += bytes(view[:need])
            view = view[need:]
            if len(self._pending) < want:
                return
            header, self._pending = self._pending, b""
            if self.count is None:
                self._read_head(header)
            else:
                yield self._read_entry(header)
                if self._left == 0:
                    self._in_entry = False
                    self._index += 1
                    yield EntryEnd(self._index - 1)

    def _read_head(self, header: bytes) -> None:
        magic, count = _HEAD.unpack(header)
        if magic != BATCH_MAGIC:
            raise BatchFormatError("a batch starts with the magic 'DGB1'")
        if count > self.max_count:
            raise BatchTooLargeError(
                f"a batch holds at most {self.max_count} entries, this one says {count}"
            )
        self.count = count

    def _read_entry(self, header: bytes) -> EntryStart:
        name, length = _ENTRY.unpack(header)
        if length > self.max_entry:
            raise BatchTooLargeError(
                f"entry {self._index} ({name.hex()}) is {length} bytes, "
                f"larger than the cap of {self.max_entry}"
            )
        self.total += length
        if self.total > self.max_total:
            raise BatchTooLargeError(
                f"the batch is larger than the cap of {self.max_total} bytes "
                f"(at entry {self._index}, {name.hex()})"
            )
        self._left = length
        self._in_entry = True
        return EntryStart(self._index, name, length)

    def finish(self) -> int:
        """Check the frame ended exactly after its last entry; returns the count."""
        if self.count is None or self._in_entry or self._pending or self._index != self.count:
            raise BatchFormatError(
                "the batch is truncated: "
                + (
                    "no complete header"
                    if self.count is None
                    else f"{self._index} of {self.count} entries complete"
                )
            )
        return self.count


def decode_frame(
    body: bytes, max_entry: int, max_total: int, max_count: int = MAX_BATCH_SHARES
) -> list[tuple[bytes, bytes]]:
    """A whole frame parsed into ``(name, data)`` entries, with the same caps as
    :class:`FrameReader`."""
    reader = FrameReader(max_entry, max_total, max_count)
    entries: list[tuple[bytes, bytes]] = []
    name = b""
    parts: list[bytes] = []
    for event in reader.feed(body):
        if isinstance(event, EntryStart):
            name, parts = event.name, []
        elif isinstance(event, EntryData):
            parts.append(bytes(event.data))
        else:
            entries.append((name, b"".join(parts)))
    reader.finish()
    return entries
