"""The storage node's pack store: blobs appended to segment files, indexed in SQLite.

Layout under a node's data directory (``docs/formats.md``, "Storage node: on-disk
layout")::

    packs/00000001.pack   segments: stored blobs back to back, append-only
    index.sqlite3         which blob is where: shares(name, segment, offset, length, ...)

A file per blob cost the node more than the rest of a publish: an inode allocation
(slow on ext4 without a journal), fan-out directories and an fsync of the file
and of its directory for every share. Here a batch of blobs costs no inode, one
segment fsync and one index transaction.

A :class:`PackWriter` takes exclusive use of one open segment and appends a batch
to it, hashing each blob on the way: a blob is only ever indexed under the
SHA-256 of its bytes. Nothing is visible until :meth:`PackWriter.commit` has
fsynced the segment and inserted all of the batch's rows in one transaction; a
refused batch is cut off the segment again. At start, every segment is truncated
to the end of its last indexed blob, which drops whatever a crash left of an
uncommitted batch.

The index is the authority: segments carry no framing of their own, and a byte
range no row points at is garbage (of an aborted batch, a replaced or deleted
blob) that :meth:`PackStore.compact` reclaims.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from datagora.storage.blocks import AddressHasher, content_address
from datagora.storage.errors import IntegrityError, StorageError, VanishedError
from datagora.storage.shares import SHARE_HEADER_SIZE, ShareHeader

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "INDEX_VERSION",
    "Entry",
    "Holding",
    "PackStore",
    "PackWriter",
    "share_location",
    "stored_names",
]

INDEX_VERSION: Final = 1
DEFAULT_SEGMENT_BYTES: Final = 256 << 20
_OPEN_READERS: Final = 32
_IMPORT_BATCH_BYTES: Final = 64 << 20
# Drop a batch's pages from the page cache once they are on disk. Measured with
# 6 node processes, 256 MB published in 1 MiB chunks then retrieved, node
# user+sys ms per MB over 4 alternating runs: publish 6.05 / 6.33 / 5.86 / 5.31
# dropped vs 7.70 / 5.94 / 5.85 / 5.86 kept; retrieve 3.67 / 3.44 / 3.44 / 2.85
# dropped vs 3.40 / 3.63 / 3.44 / 3.63 kept. Slightly cheaper both ways (on this
# VM first-touched page-cache pages are expensive; freed ones get reused), and a
# node's cache is not filled with shares rarely read back soon.
_DROP_WRITTEN: Final = True
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS shares (
    name BLOB PRIMARY KEY,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    dataset BLOB,
    version INTEGER,
    stored_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shares_by_segment ON shares (segment, offset);
CREATE INDEX IF NOT EXISTS shares_by_dataset ON shares (dataset, version);
CREATE TABLE IF NOT EXISTS placements (
    manifest BLOB NOT NULL,
    record BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    PRIMARY KEY (manifest, record)
) WITHOUT ROWID;
"""


class Holding(enum.Enum):
    """What the store holds under a name."""

    NOTHING = "nothing"
    INTACT = "intact"  # a copy that hashes to its name
    ROTTEN = "rotten"  # a copy that no longer does: a fresh one replaces it


@dataclass(frozen=True, slots=True)
class Entry:
    """An indexed blob; ``dataset`` and ``version`` come from its share header, if
    it is a share (``None`` for manifests, placement records and other blobs)."""

    name: bytes
    length: int
    dataset: bytes | None
    version: int | None
    stored_at: int


def _connect(path: Path) -> sqlite3.Connection:
    # Transactions are explicit (``with conn``); WAL lets reads run beside a commit.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _inspect(data_dir: Path, query: str, args: tuple[bytes, ...] = ()) -> list[tuple[Any, ...]]:
    index = data_dir / "index.sqlite3"
    if not index.exists():
        return []
    conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def share_location(data_dir: Path, name_hex: str) -> tuple[Path, int, int] | None:
    """Where the blob ``name_hex`` lies under a node's ``data_dir``: (segment file,
    offset, length), or ``None`` if it is not indexed. For tests and tools that
    inspect a node's disk (read-only); the node itself uses :class:`PackStore`."""
    rows = _inspect(
        data_dir,
        "SELECT segment, offset, length FROM shares WHERE name = ?",
        (bytes.fromhex(name_hex),),
    )
    if not rows:
        return None
    segment, offset, length = rows[0]
    return _segment_path(data_dir / "packs", segment), offset, length


def stored_names(data_dir: Path) -> set[str]:
    """The hex names of every blob indexed under a node's ``data_dir`` (read-only,
    like :func:`share_location`)."""
    return {bytes(row[0]).hex() for row in _inspect(data_dir, "SELECT name FROM shares")}


def _segment_path(folder: Path, number: int) -> Path:
    return folder / f"{number:08d}.pack"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        piece = os.pread(fd, length - got, offset + got)
        if not piece:
            raise StorageError(f"a segment ends inside an indexed blob (at offset {offset})")
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def _header_fields(head: bytes) -> tuple[bytes | None, int | None]:
    try:
        header = ShareHeader.unpack(head)
    except IntegrityError:
        return None, None
    return header.dataset_id, header.version


@dataclass(eq=False)
class _Segment:
    """A segment open for appending; used by one writer at a time."""

    number: int
    path: Path
    fd: int
    size: int

    def append(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, self.size)
            self.size += written
            view = view[written:]


class _Readers:
    """Read-only descriptors of segments, kept open in a small LRU cache; one is
    closed only once no read is using it (compaction may retire a segment while a
    read of its old copy is under way)."""

    def __init__(self, folder: Path, keep: int = _OPEN_READERS) -> None:
        self._folder = folder
        self._keep = keep
        self._lock = threading.Lock()
        self._open: OrderedDict[int, list[int]] = OrderedDict()  # number -> [fd, users]
        self._retired: dict[int, list[int]] = {}  # id(entry) -> entry, closed by its last user

    @contextlib.contextmanager
    def pinned(self, number: int) -> Iterator[int]:
        with self._lock:
            entry = self._open.get(number)
            if entry is None:
                entry = [os.open(_segment_path(self._folder, number), os.O_RDONLY), 0]
                self._open[number] = entry
                self._evict()
            else:
                self._open.move_to_end(number)
            entry[1] += 1
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0 and self._retired.pop(id(entry), None) is not None:
                    os.close(entry[0])

    def forget(self, number: int) -> None:
        """Stop serving from segment ``number`` (it is being removed)."""
        with self._lock:
            self._drop_locked(number)

    def close(self) -> None:
        with self._lock:
            for number in list(self._open):
                self._drop_locked(number)

    def _drop_locked(self, number: int) -> None:
        entry = self._open.pop(number, None)
        if entry is None:
            return
        if entry[1] == 0:
            os.close(entry[0])
        else:
            self._retired[id(entry)] = entry

    def _evict(self) -> None:
        while len(self._open) > self._keep:
            idle = next((n for n, e in self._open.items() if e[1] == 0), None)
            if idle is None:
                return
            os.close(self._open.pop(idle)[0])


@dataclass
class _Pending:
    name: bytes
    holding: Holding
    offset: int
    digest: AddressHasher = field(default_factory=AddressHasher)
    length: int = 0
    head: bytes = b""


class PackWriter:
    """One batch being appended to a segment this writer has to itself.

    For each blob: :meth:`start`, :meth:`write` its bytes as they arrive,
    :meth:`finish` (which checks the hash). Then :meth:`commit` makes the whole
    batch durable and visible at once, or :meth:`abort` cuts it off the segment.
    Use as a context manager: leaving it uncommitted aborts."""

    def __init__(self, store: PackStore, segment: _Segment) -> None:
        self._store = store
        self._segment: _Segment | None = segment
        self._start = segment.size
        self._current: _Pending | None = None
        self._entries: list[_Pending] = []

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._segment is not None:
            self.abort()

    def start(self, name: bytes, holding: Holding = Holding.NOTHING) -> None:
        """Begin the blob that should hash to ``name``; ``holding`` is what the store
        held under that name when the batch saw it (:meth:`PackStore.holding`): an
        intact copy is not written again, only checked."""
        segment = self._live()
        self._current = _Pending(name, holding, segment.size)

    def write(self, data: bytes | memoryview) -> None:
        """Append (and hash) the next bytes of the current blob."""
        current = self._current
        if current is None:
            raise StorageError("write() before start()")
        current.digest.update(data)
        current.length += len(data)
        if len(current.head) < SHARE_HEADER_SIZE:
            current.head += bytes(data[: SHARE_HEADER_SIZE - len(current.head)])
        if current.holding is not Holding.INTACT:
            self._live().append(data)

    def finish(self) -> bool:
        """End the current blob; ``False`` if its bytes do not hash to its name (the
        batch must then be aborted)."""
        current, self._current = self._current, None
        if current is None:
            raise StorageError("finish() before start()")
        if current.digest.digest() != current.name:
            return False
        self._entries.append(current)
        return True

    def commit(
        self, placements: Sequence[tuple[bytes, bytes, int]] = ()
    ) -> list[tuple[bool, bool]]:
        """Fsync the appended bytes and index every finished blob in one transaction;
        also index ``placements`` (manifest hash, record name, sequence). Returns
        (stored, new) per blob: an intact copy already held is neither; a rotten
        one that was replaced is stored, not new. Blocking: run it in a thread."""
        segment = self._live()
        if self._current is not None:
            raise StorageError("commit() with a blob still open")
        try:
            self._sync()
            results = self._store._index(segment.number, self._entries, placements)
        except BaseException:
            self.abort()
            raise
        self._done()
        return results

    def abort(self) -> None:
        """Cut this batch off the segment: nothing of it was stored."""
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            if segment.size > self._start:
                os.ftruncate(segment.fd, self._start)
            segment.size = self._start
        except OSError:
            # Unsure what the segment ends with: retire it (its tail is garbage
            # no row points at, dropped at the next start).
            self._store._retire(segment)
            return
        self._store._release(segment)

    def _live(self) -> _Segment:
        if self._segment is None:
            raise StorageError("this batch is already committed or aborted")
        return self._segment

    def _sync(self) -> None:
        segment = self._live()
        if segment.size > self._start:
            os.fdatasync(segment.fd)
            if _DROP_WRITTEN:
                os.posix_fadvise(
                    segment.fd, self._start, segment.size - self._start, os.POSIX_FADV_DONTNEED
                )

    def _done(self) -> None:
        """Hand the segment back, keeping what was appended."""
        self._store._release(self._live())
        self._segment = None


class PackStore:
    """Blobs in append-only segments under ``root/packs``, indexed in
    ``root/index.sqlite3``. Safe to use from several threads."""

    def __init__(self, root: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if segment_bytes <= 0:
            raise StorageError("segment_bytes must be positive")
        self.root = root
        self.segment_bytes = segment_bytes
        self.packs = root / "packs"
        self.packs.mkdir(parents=True, exist_ok=True)
        index = root / "index.sqlite3"
        self._db = _connect(index)  # writes, under _db_lock
        self._db_lock = threading.Lock()
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, INDEX_VERSION):
            raise StorageError(
                f"{index} is index format {version}; this datagora reads {INDEX_VERSION}"
            )
        self._db.executescript(_SCHEMA + f"PRAGMA user_version = {INDEX_VERSION};")
        self._reader = _connect(index)  # lookups, under _reader_lock
        self._reader_lock = threading.Lock()
        self._readers = _Readers(self.packs)
        self._pool_lock = threading.Lock()
        self._idle: list[_Segment] = []
        self._in_use: set[int] = set()  # segments open for appending (idle or writing)
        self._next = 1
        self._compacting = threading.Lock()
        self._recover()
        self.count, self.bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length), 0) FROM shares"
        ).fetchone()

    # -- start-up ---------------------------------------------------------------

    def _recover(self) -> None:
        """Truncate each segment to the end of its last indexed blob; bytes past it
        are an uncommitted batch. A segment nothing points at is removed."""
        ends = dict(
            self._db.execute("SELECT segment, MAX(offset + length) FROM shares GROUP BY segment")
        )
        numbers = sorted(int(p.stem) for p in self.packs.glob("*.pack") if p.stem.isdigit())
        self._next = max([*numbers, *ends, 0]) + 1
        for number in numbers:
            path = _segment_path(self.packs, number)
            end = ends.get(number, 0)
            if end == 0:
                path.unlink()
                continue
            if path.stat().st_size > end:
                with path.open("r+b") as handle:
                    handle.truncate(end)
                    os.fsync(handle.fileno())
        _fsync_dir(self.packs)
        last = max(ends, default=None)
        if last is not None and ends[last] < self.segment_bytes:
            path = _segment_path(self.packs, last)
            if path.exists():
                fd = os.open(path, os.O_WRONLY)
                self._idle.append(_Segment(last, path, fd, ends[last]))
                self._in_use.add(last)

    def import_files(self, shares: Path, placements: Path | None = None) -> int:
        """Move blobs from the old file-per-blob layout (``shares/ab/<sha256>``, and
        ``placements/<manifest>/<record>`` markers holding a sequence) into the
        store; returns how many blobs were imported. A file is removed once its
        blob is committed; one that no longer hashes to its name is dropped."""
        imported = 0
        files = sorted(p for p in shares.glob("*/*") if p.is_file())
        batch: list[Path] = []
        size = 0
        for path in files:
            batch.append(path)
            size += path.stat().st_size
            if size >= _IMPORT_BATCH_BYTES:
                imported += self._import_batch(batch)
                batch, size = [], 0
        imported += self._import_batch(batch)
        if placements is not None and placements.is_dir():
            markers = [
                (bytes.fromhex(m.parent.name), bytes.fromhex(m.name), int(m.read_text()))
                for m in placements.glob("*/*")
            ]
            with self._db_lock, self._db:
                self._db.executemany("INSERT OR IGNORE INTO placements VALUES (?, ?, ?)", markers)
            for marker in placements.glob("*/*"):
                marker.unlink()
            for folder in placements.iterdir():
                folder.rmdir()
            placements.rmdir()
        for folder in shares.iterdir():
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            shares.rmdir()
        return imported

    def _import_batch(self, paths: list[Path]) -> int:
        with self.writer() as writer:
            for path in paths:
                try:
                    name = bytes.fromhex(path.name)
                except ValueError:
                    continue
                data = path.read_bytes()
                if len(name) != 32 or content_address(data) != name:
                    continue  # not a blob, or rotted: the network's repair restores it
                writer.start(name, self.holding(name))
                writer.write(data)
                writer.finish()
            results = writer.commit()
        for path in paths:
            path.unlink(missing_ok=True)
        return sum(new for _, new in results)

    # -- writing ---------------------------------------------------------------

    def writer(self) -> PackWriter:
        """A writer with a segment to itself (a new one if all are busy or full)."""
        with self._pool_lock:
            segment = self._idle.pop() if self._idle else None
            if segment is None:
                number, self._next = self._next, self._next + 1
                path = _segment_path(self.packs, number)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                segment = _Segment(number, path, fd, 0)
                self._in_use.add(number)
                new = True
            else:
                new = False
        if new:
            _fsync_dir(self.packs)
        return PackWriter(self, segment)

    def _release(self, segment: _Segment) -> None:
        if segment.size >= self.segment_bytes:
            self._retire(segment)
            return
        with self._pool_lock:
            self._idle.append(segment)

    def _retire(self, segment: _Segment) -> None:
        os.close(segment.fd)
        with self._pool_lock:
            self._in_use.discard(segment.number)

    def _index(
        self,
        segment: int,
        entries: list[_Pending],
        placements: Sequence[tuple[bytes, bytes, int]],
    ) -> list[tuple[bool, bool]]:
        now = int(time.time())
        results: list[tuple[bool, bool]] = []
        added = grown = 0
        with self._db_lock, self._db:
            for e in entries:
                if e.holding is Holding.INTACT:
                    # Not rewritten, but kept: the row must still exist (a garbage
                    # collector may have deleted it since), and its age restarts,
                    # as for any upload.
                    touched = self._db.execute(
                        "UPDATE shares SET stored_at = ? WHERE name = ?", (now, e.name)
                    ).rowcount
                    if not touched:
                        raise VanishedError(
                            f"blob {e.name.hex()} was deleted while this request was "
                            "received; send it again"
                        )
                    results.append((False, False))
                    continue
                row = self._db.execute(
                    "SELECT length FROM shares WHERE name = ?", (e.name,)
                ).fetchone()
                if row is not None and e.holding is not Holding.ROTTEN:
                    # Stored meanwhile (by another batch, or earlier in this one).
                    results.append((False, False))
                    continue
                dataset, version = _header_fields(e.head)
                self._db.execute(
                    "INSERT OR REPLACE INTO shares VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.name, segment, e.offset, e.length, dataset, version, now),
                )
                results.append((True, row is None))
                added += row is None
                grown += e.length - (row[0] if row is not None else 0)
            self._db.executemany("INSERT OR IGNORE INTO placements VALUES (?, ?, ?)", placements)
            self.count += added
            self.bytes += grown
        return results

    # -- reading ---------------------------------------------------------------

    def _locate(self, name: bytes) -> tuple[int, int, int] | None:
        with self._reader_lock:
            row = self._reader.execute(
                "SELECT segment, offset, length FROM shares WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def size(self, name: bytes) -> int | None:
        """The length of the blob stored under ``name``, or ``None``."""
        where = self._locate(name)
        return None if where is None else where[2]

    def read(self, name: bytes) -> bytes | None:
        """The blob stored under ``name`` as stored (not re-verified), or ``None``."""
        for _ in range(2):
            where = self._locate(name)
            if where is None:
                return None
            segment, offset, length = where
            try:
                with self._readers.pinned(segment) as fd:
                    return _pread_exact(fd, length, offset)
            except FileNotFoundError:
                continue  # compacted into another segment meanwhile: look again
        return None

    def holding(self, name: bytes) -> Holding:
        """Whether ``name`` is held, and if so whether its copy still hashes to it
        (reads the copy: run it in a thread)."""
        data = self.read(name)
        if data is None:
            return Holding.NOTHING
        return Holding.INTACT if content_address(data) == name else Holding.ROTTEN

    def placements(self, manifest: bytes) -> list[tuple[bytes, int]]:
        """(record name, sequence) of each placement record held for ``manifest``."""
        with self._reader_lock:
            rows = self._reader.execute(
                "SELECT p.record, p.sequence FROM placements p "
                "JOIN shares s ON s.name = p.record WHERE p.manifest = ?",
                (manifest,),
            ).fetchall()
        return [(bytes(r), s) for r, s in rows]

    def entries(self, dataset: bytes | None = None) -> list[Entry]:
        """Every indexed blob, or those of shares of ``dataset``, oldest first (for a
        garbage collector choosing what to :meth:`delete`)."""
        query = "SELECT name, length, dataset, version, stored_at FROM shares"
        args: tuple[bytes, ...] = ()
        if dataset is not None:
            query += " WHERE dataset = ?"
            args = (dataset,)
        with self._reader_lock:
            rows = self._reader.execute(query + " ORDER BY stored_at, name", args).fetchall()
        return [
            Entry(bytes(n), ln, None if d is None else bytes(d), v, t) for n, ln, d, v, t in rows
        ]

    # -- garbage collection ----------------------------------------------------

    def delete(self, names: Iterable[bytes], stored_before: int | None = None) -> int:
        """Stop holding these blobs; returns how many were held. Their bytes stay in
        their segments until :meth:`compact`. With ``stored_before`` (Unix seconds),
        a blob stored (or uploaded again) at or after it is kept: a collector's
        decision cannot undo an upload that raced it."""
        removed = freed = 0
        limit = 2**62 if stored_before is None else stored_before
        with self._db_lock, self._db:
            for name in names:
                row = self._db.execute(
                    "DELETE FROM shares WHERE name = ? AND stored_at < ? RETURNING length",
                    (name, limit),
                ).fetchone()
                if row is not None:
                    removed += 1
                    freed += row[0]
            self.count -= removed
            self.bytes -= freed
        return removed

    def compact(self) -> int:
        """Rewrite each segment (not open for appending) whose live bytes are less
        than half its size: live blobs are copied to a fresh segment, fsynced, their
        rows moved in one transaction, and the old segment removed. A blob that no
        longer hashes to its name is dropped. Returns how many segments were
        rewritten. Blocking: run it in a thread."""
        with self._compacting:
            segments = sorted(self.packs.glob("*.pack"))
            # Listed first: a segment not open for appending now never will be again.
            with self._pool_lock:
                busy = set(self._in_use)
            with self._db_lock:
                live = dict(
                    self._db.execute("SELECT segment, SUM(length) FROM shares GROUP BY segment")
                )
            rewritten = 0
            for path in segments:
                number = int(path.stem)
                if number in busy or live.get(number, 0) * 2 >= path.stat().st_size:
                    continue
                self._rewrite(number, path)
                rewritten += 1
            return rewritten

    def _rewrite(self, number: int, path: Path) -> None:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT name, offset, length FROM shares WHERE segment = ? ORDER BY offset",
                (number,),
            ).fetchall()
        moves: list[tuple[int, int, bytes, int, int]] = []
        rotten: list[tuple[bytes, int]] = []
        with self.writer() as writer, path.open("rb") as source:
            target = writer._live()
            for name, offset, length in rows:
                data = _pread_exact(source.fileno(), length, offset)
                if content_address(data) != name:
                    rotten.append((name, offset))
                    continue
                moves.append((target.number, target.size, name, number, offset))
                target.append(data)
            writer._sync()
            with self._db_lock, self._db:
                # Guarded by the old place: a row replaced or deleted meanwhile stays so.
                self._db.executemany(
                    "UPDATE shares SET segment = ?, offset = ? "
                    "WHERE name = ? AND segment = ? AND offset = ?",
                    moves,
                )
                for name, offset in rotten:
                    row = self._db.execute(
                        "DELETE FROM shares WHERE name = ? AND segment = ? AND offset = ? "
                        "RETURNING length",
                        (name, number, offset),
                    ).fetchone()
                    if row is not None:
                        self.count -= 1
                        self.bytes -= row[0]
                left = self._db.execute(
                    "SELECT COUNT(*) FROM shares WHERE segment = ?", (number,)
                ).fetchone()[0]
            writer._done()
        if left == 0:
            self._readers.forget(number)
            path.unlink()
            _fsync_dir(self.packs)

    def close(self) -> None:
        """Close every file and the index."""
        with self._pool_lock:
            for segment in self._idle:
                os.close(segment.fd)
            self._idle.clear()
        self._readers.close()
        self._db.close()
        self._reader.close()
