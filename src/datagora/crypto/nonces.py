"""Nonce stores: which (account, nonce) pairs a service has accepted, until they expire.

:func:`~datagora.crypto.eip712.verify_request` takes a :class:`NonceStore`; three
backends stand behind it:

- :class:`MemoryNonceStore`: in process, forgets everything on restart (tests, one-off services);
- :class:`SqliteNonceStore`: a SQLite file shared by processes (the agent, compute nodes);
- :class:`FileNonceStore`: an append-only record file (``datagora.nonces.v1``) shared by
  processes, a proxy's store: a proxy checks a nonce on every re-encryption.

The record file. In SQLite each check cost ~30 us and about 25 system calls
(locks, WAL frames, shared-memory index); here it is one ``flock``, one ``fstat``
and one ``write`` of a record, plus a ``pread`` of what the other processes
appended since. The file is a sequence of 64-byte records: the account (20 bytes),
the nonce (32), the request's expiry (8, Unix seconds, big-endian) and the CRC-32
of those 60 bytes (4, big-endian). Every process keeps the unexpired records in
memory; each check holds an exclusive ``flock`` on ``<path>.lock``, first reads
the records other processes appended, then appends its own. When the file is more
than four times its live records (and at least 1 MiB) the process holding the lock
writes the live ones to a new file and renames it over the old; the others notice
that the file they hold was unlinked and read the new one.

A record cut short by a crash (the last one) is cut off at the next open or
check; a bad record anywhere else means the file was damaged, and the store
refuses to open rather than forget which nonces were used.

Durability. A nonce forgotten by an OS crash or power loss reopens its request to
replay until it expires, so both stores are durable by default: SQLite commits
with ``synchronous=FULL``; the record file is ``fdatasync``-ed before
:meth:`~NonceStore.remember` returns. The sync runs outside both locks and one
sync covers every record the process appended before it (group commit), so
concurrent checks share it rather than queue behind one another. A compaction
syncs the new file and then its directory after the rename. ``durable=False``
trades this for speed (tests, throwaway services).
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import heapq
import os
import sqlite3
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Self

from datagora.atomic import replace_durably
from datagora.crypto.errors import NonceFileCorrupt, RequestRefused

__all__ = ["FileNonceStore", "MemoryNonceStore", "NonceStore", "SqliteNonceStore"]


class NonceStore(abc.ABC):
    """Remembers which (account, nonce) pairs were used, until their request expires.

    A store is a context manager; :meth:`close` releases its files: closing again
    does nothing, any other use of a closed file-backed store raises.
    """

    @abc.abstractmethod
    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """Atomically record the pair; ``False`` if it is already held and unexpired.

        Entries whose ``expires`` ≤ ``now`` may be forgotten: their requests are
        refused as expired anyway.
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many pairs the store holds (expired ones not yet forgotten included)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's files."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- memory


class MemoryNonceStore(NonceStore):
    """A thread-safe in-process :class:`NonceStore` (forgets everything on restart)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, bytes], int] = {}
        # A heap of (expires, key) makes pruning O(log n) per entry.
        self._heap: list[tuple[int, tuple[str, bytes]]] = []

    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """See :meth:`NonceStore.remember`."""
        key = (account.lower(), bytes(nonce))
        with self._lock:
            self._prune(now)
            if key in self._expiry:
                return False
            self._expiry[key] = expires
            heapq.heappush(self._heap, (expires, key))
            return True

    def _prune(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires:
                del self._expiry[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def close(self) -> None:
        """Nothing to release: the store lives in memory."""


# ---------------------------------------------------------------- SQLite


class SqliteNonceStore(NonceStore):
    """A :class:`NonceStore` in a SQLite file: survives restarts, shared by processes.

    Thread-safe. Each check-and-insert is one statement, so one transaction: two
    processes on the same file cannot both accept a nonce. Expired rows are deleted
    at most once a second. With ``durable=True`` (the default) every commit is synced
    (``synchronous=FULL``) before it returns; with ``durable=False`` a commit survives
    a process crash but the last moments before an OS crash or power loss may be lost.
    """

    _SCHEMA_VERSION: Final = 1
    _PRUNE_EVERY_S: Final = 1

    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._pruned = -(2**63)  # the `now` of the last pruning of expired rows
        try:
            self._lock_fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RequestRefused(f"cannot open the nonce store {self._path}: {exc}") from None
        try:
            self._db = sqlite3.connect(
                self._path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, self._SCHEMA_VERSION):
                raise RequestRefused(
                    f"{self._path} is a nonce store of schema {version}; this datagora "
                    f"reads schema {self._SCHEMA_VERSION}"
                )
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS nonces ("
                " account TEXT NOT NULL, nonce BLOB NOT NULL, expires INTEGER NOT NULL,"
                " PRIMARY KEY (account, nonce)) WITHOUT ROWID;"
                "CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires);"
                f"PRAGMA user_version={self._SCHEMA_VERSION};"
            )
        except (sqlite3.Error, RequestRefused) as exc:
            os.close(self._lock_fd)
            if isinstance(exc, RequestRefused):
                raise
            raise RequestRefused(f"cannot open the nonce store {self._path}: {exc}") from None

    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """See :meth:`NonceStore.remember`."""
        with self._lock, self._flocked():
            if now - self._pruned >= self._PRUNE_EVERY_S:
                self._db.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
                self._pruned = now
            # One statement, so one transaction: the pair is inserted, or an expired
            # row of it (not pruned yet) is taken over; an unexpired one changes nothing.
            cursor = self._db.execute(
                "INSERT INTO nonces (account, nonce, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (account, nonce) DO UPDATE SET expires = excluded.expires"
                " WHERE nonces.expires <= ?",
                (account.lower(), bytes(nonce), expires, now),
            )
            return cursor.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    @contextlib.contextmanager
    def _flocked(self) -> Iterator[None]:
        # Processes sharing the file queue on a kernel lock, woken as soon as it is
        # free; SQLite's own busy handler would sleep 1, 2, 5… ms between retries.
        if self._lock_fd < 0:
            raise RequestRefused(f"the nonce store {self._path} is closed")
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the database; closing again does nothing, any other use raises."""
        with self._lock:
            self._db.close()
            if self._lock_fd >= 0:
                # Forgotten at once: a later flock must not land on whatever file
                # reuses the descriptor's number.
                os.close(self._lock_fd)
                self._lock_fd = -1


# ---------------------------------------------------------------- record file


_RECORD: Final = struct.Struct(">20s32sQI")
_SIZE: Final = _RECORD.size  # 64
_COMPACT_MIN_BYTES: Final = 1 << 20


def _account_bytes(account: str) -> bytes:
    raw = bytes.fromhex(account.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"not an account address: {account!r}")
    return raw


def _record(account: bytes, nonce: bytes, expires: int) -> bytes:
    body = _RECORD.pack(account, nonce, expires, 0)[:60]
    return body + zlib.crc32(body).to_bytes(4, "big")


class FileNonceStore(NonceStore):
    """A thread-safe :class:`NonceStore` in an append-only record file, shared by processes.

    With ``durable=True`` (the default) an accepted nonce is on disk before
    :meth:`remember` returns (one ``fdatasync`` shared by the checks that run at
    once); with ``durable=False`` it survives a crash of the process but the last
    moments before an OS crash may be lost. With ``defer_sync=True`` (a server on
    an event loop, which must not block on the disk) :meth:`remember` does not
    sync: the caller calls :meth:`sync` (in a thread, overlapping its other work)
    before it acts on the acceptance. ``legacy_sqlite`` names a :class:`SqliteNonceStore` file
    whose unexpired nonces are taken over (once: it is renamed ``*.imported``).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        durable: bool = True,
        defer_sync: bool = False,
        legacy_sqlite: Path | None = None,
    ) -> None:
        self._path = Path(path)
        self._durable = durable
        self._defer = defer_sync
        self._lock = threading.Lock()
        # Group commit: records appended by this process, and how many are synced.
        self._sync_lock = threading.Lock()
        self._appended = 0
        self._synced = 0
        self._expiry: dict[tuple[bytes, bytes], int] = {}
        self._heap: list[tuple[int, tuple[bytes, bytes]]] = []
        self._fd = -1
        self._size = 0
        try:
            self._lock_fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RequestRefused(f"cannot open the nonce store {self._path}: {exc}") from None
        try:
            with self._flocked():
                self._open()
                if legacy_sqlite is not None and legacy_sqlite.exists():
                    self._import(legacy_sqlite)
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            os.close(self._lock_fd)
            raise

    # ------------------------------------------------------------ file

    def _open(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise RequestRefused(f"cannot open the nonce store {self._path}: {exc}") from None
        self._expiry.clear()
        self._heap.clear()
        self._size = 0
        self._read_new()

    def _read_new(self) -> None:
        """Take in what other processes appended (call with the file lock held)."""
        status = os.fstat(self._fd)
        if status.st_nlink == 0 or status.st_size < self._size:
            # Another process compacted: this file was replaced. Read the new one.
            self._open()
            return
        if status.st_size == self._size:
            return
        data = os.pread(self._fd, status.st_size - self._size, self._size)
        whole = len(data) - len(data) % _SIZE
        for at in range(0, whole, _SIZE):
            account, nonce, expires, crc = _RECORD.unpack_from(data, at)
            if zlib.crc32(data[at : at + 60]) != crc:
                if at + _SIZE < len(data):
                    number = (self._size + at) // _SIZE + 1
                    raise NonceFileCorrupt(f"{self._path}: record {number} is damaged")
                whole = at  # the last record was cut short by a crash
                break
            self._add((account, nonce), expires)
        if whole != len(data):
            os.ftruncate(self._fd, self._size + whole)
        self._size += whole

    def _add(self, key: tuple[bytes, bytes], expires: int) -> None:
        if expires > self._expiry.get(key, -1):
            self._expiry[key] = expires
            heapq.heappush(self._heap, (expires, key))

    def _prune(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires:
                del self._expiry[key]

    def _append(self, records: bytes) -> None:
        written = os.write(self._fd, records)
        if written != len(records):  # a full disk: leave no torn record behind
            os.ftruncate(self._fd, self._size)
            raise OSError(f"{self._path}: short write ({written} of {len(records)} bytes)")
        self._size += written
        self._appended += 1

    def _compact(self) -> None:
        live = b"".join(_record(a, n, e) for (a, n), e in self._expiry.items())
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, live)
            os.fsync(fd)
        finally:
            os.close(fd)
        replace_durably(tmp, self._path)
        self._open()
        # Everything this process appended is in the synced new file.
        self._synced = self._appended

    def _import(self, legacy: Path) -> None:
        db = sqlite3.connect(legacy)
        try:
            rows = db.execute("SELECT account, nonce, expires FROM nonces").fetchall()
        except sqlite3.Error as exc:
            raise RequestRefused(f"cannot read the old nonce store {legacy}: {exc}") from None
        finally:
            db.close()
        records = []
        for account, nonce, expires in rows:
            key = (_account_bytes(account), bytes(nonce))
            if expires > self._expiry.get(key, -1):
                records.append(_record(*key, expires))
                self._add(key, expires)
        self._append(b"".join(records))
        os.fsync(self._fd)  # before the old file is set aside, whatever `durable` says
        replace_durably(legacy, legacy.with_name(legacy.name + ".imported"))

    @contextlib.contextmanager
    def _flocked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------ the store

    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """See :meth:`NonceStore.remember`."""
        key = (_account_bytes(account), bytes(nonce))
        if len(key[1]) != 32:
            raise ValueError("a nonce is 32 bytes")
        with self._lock:
            if self._lock_fd < 0:
                raise RequestRefused(f"the nonce store {self._path} is closed")
            with self._flocked():
                accepted = self._remember(key, expires, now)
            ticket = self._appended
        if accepted and self._durable and not self._defer:
            self.sync(ticket)
        return accepted

    @property
    def appended(self) -> int:
        """How many records this store has appended (a ticket for :meth:`sync`)."""
        return self._appended

    def sync(self, ticket: int | None = None) -> None:
        """Return once the first `ticket` records this store appended (default: all
        so far) are on disk; one ``fdatasync`` serves every caller waiting at once."""
        if ticket is None:
            ticket = self._appended
        with self._sync_lock:
            if self._synced >= ticket:
                return  # a sync that started after our append covered it
            with self._lock:
                if self._fd < 0:
                    raise RequestRefused(f"the nonce store {self._path} is closed")
                # A duplicate, so a compaction replacing the file meanwhile cannot
                # close it under us (the compacted file is synced by whoever wrote it).
                fd = os.dup(self._fd)
                target = self._appended
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            self._synced = max(self._synced, target)

    def _remember(self, key: tuple[bytes, bytes], expires: int, now: int) -> bool:
        """:meth:`remember` with both locks held."""
        self._read_new()
        self._prune(now)
        held = self._expiry.get(key)
        if held is not None and held > now:
            return False
        self._append(_record(*key, expires))
        self._add(key, expires)
        if self._size >= _COMPACT_MIN_BYTES and self._size > 4 * _SIZE * len(self._expiry):
            self._compact()
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def close(self) -> None:
        """Close the files; closing again does nothing, any other use raises."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                # Forgotten at once: a later flock must not land on whatever file
                # reuses the descriptor's number.
                os.close(self._lock_fd)
                self._lock_fd = -1
