"""A :class:`~datagora.crypto.signed.NonceStore` in an append-only file (``datagora.nonces.v1``).

A proxy checks a nonce on every re-encryption, and its worker processes must
agree on which nonces were used. In SQLite each check cost ~30 us and about 25
system calls (locks, WAL frames, shared-memory index); here it is one ``flock``,
one ``fstat`` and one ``write`` of a record, plus a ``pread`` of what the other
processes appended since.

The file is a sequence of 64-byte records: the account (20 bytes), the nonce (32),
the request's expiry (8, Unix seconds, big-endian) and the CRC-32 of those 60
bytes (4, big-endian). Every process keeps the unexpired records in memory; each
check holds an exclusive ``flock`` on ``<path>.lock``, first reads the records
other processes appended, then appends its own. When the file is more than four
times its live records (and at least 1 MiB) the process holding the lock writes
the live ones to a new file and renames it over the old; the others notice that
the file they hold was unlinked and read the new one.

A record cut short by a crash (the last one) is cut off at the next open or
check; a bad record anywhere else means the file was damaged, and the store
refuses to open rather than forget which nonces were used.
"""

from __future__ import annotations

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
from typing import Final

from datagora.crypto.signed import RequestRefused

__all__ = ["FileNonceStore", "NonceFileCorrupt"]

_RECORD: Final = struct.Struct(">20s32sQI")
_SIZE: Final = _RECORD.size  # 64
_COMPACT_MIN_BYTES: Final = 1 << 20


class NonceFileCorrupt(RequestRefused):
    """A nonce file holds a damaged record before its last one."""


def _account_bytes(account: str) -> bytes:
    raw = bytes.fromhex(account.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"not an account address: {account!r}")
    return raw


def _record(account: bytes, nonce: bytes, expires: int) -> bytes:
    body = _RECORD.pack(account, nonce, expires, 0)[:60]
    return body + zlib.crc32(body).to_bytes(4, "big")


class FileNonceStore:
    """A thread-safe :class:`~datagora.crypto.signed.NonceStore` shared by processes.

    With ``durable=False`` (the default) an accepted nonce survives a crash of the
    process but the last moments before an OS crash may be lost; ``durable=True``
    syncs every record. ``legacy_sqlite`` names a :class:`SqliteNonceStore` file
    whose unexpired nonces are taken over (once: it is renamed ``*.imported``).
    """

    def __init__(
        self, path: Path | str, *, durable: bool = False, legacy_sqlite: Path | None = None
    ) -> None:
        self._path = Path(path)
        self._durable = durable
        self._lock = threading.Lock()
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
        if self._durable:
            os.fdatasync(self._fd)
        self._size += written

    def _compact(self) -> None:
        live = b"".join(_record(a, n, e) for (a, n), e in self._expiry.items())
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, live)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        self._open()

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
        if not self._durable:
            os.fsync(self._fd)
        os.replace(legacy, legacy.with_name(legacy.name + ".imported"))

    @contextlib.contextmanager
    def _flocked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------ NonceStore

    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """See :meth:`~datagora.crypto.signed.NonceStore.remember`."""
        key = (_account_bytes(account), bytes(nonce))
        if len(key[1]) != 32:
            raise ValueError("a nonce is 32 bytes")
        with self._lock:
            if self._lock_fd < 0:
                raise RequestRefused(f"the nonce store {self._path} is closed")
            with self._flocked():
                return self._remember(key, expires, now)

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

    def __enter__(self) -> FileNonceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
