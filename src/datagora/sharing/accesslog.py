"""A proxy's append-only, hash-chained access log (format ``datagora.access-log.v1``).

One JSON object per line. Each entry's ``hash`` is
``SHA-256(prev_hash ‖ canonical(entry without "hash"))`` where ``prev_hash`` is the
previous entry's hash (32 zero bytes before the first) and *canonical* is JSON with
sorted keys, separators ``,`` and ``:``, UTF-8. The entry also carries ``prev`` (hex),
so a line can be checked on its own and the chain as a whole. The digest of a log
of ``n`` entries is the hash of entry ``n``; that pair is what proxies anchor on
chain (``AccessLog.anchor``), so anyone can recompute the chain from ``GET /log``
(:func:`verify_log`) and compare it with the anchors.

Entries name accounts, datasets, versions, capsule digests and request digests —
never a key, a fragment or data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from datagora.sharing.errors import LogCorrupt

__all__ = ["GENESIS", "LOG_FORMAT", "AccessLogFile", "LogCorrupt", "entry_hash", "verify_log"]

LOG_FORMAT: Final = "datagora.access-log.v1"
GENESIS: Final = bytes(32)


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: bytes, entry: Mapping[str, Any]) -> bytes:
    """The hash of ``entry`` chained after ``prev`` (``entry`` without its ``hash`` field)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(prev + _canonical(body)).digest()


def verify_log(entries: Iterable[Mapping[str, Any]]) -> tuple[int, bytes]:
    """Recompute the chain; returns ``(entries, digest)`` or raises :class:`LogCorrupt`."""
    prev = GENESIS
    count = 0
    for count, entry in enumerate(entries, start=1):
        if entry.get("format") != LOG_FORMAT or entry.get("seq") != count:
            raise LogCorrupt(f"entry {count} is not entry {count} of a {LOG_FORMAT} log")
        if entry.get("prev") != prev.hex():
            raise LogCorrupt(f"entry {count} does not follow entry {count - 1}")
        digest = entry_hash(prev, entry)
        if entry.get("hash") != digest.hex():
            raise LogCorrupt(f"entry {count} was altered (its hash does not match)")
        prev = digest
    return count, prev


class AccessLogFile:
    """The log file of one proxy: appends are serialised, each one ``write`` of a line.

    Several processes of one proxy (``--workers``) may share the file: every append
    holds an exclusive ``flock`` on it, first reads what other processes appended
    since (their hashes become this one's ``prev``), then writes one line. Opening
    re-verifies the whole chain under the lock; a torn last line (a crash mid-write)
    is cut off, anything else that does not chain is :class:`LogCorrupt`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            with self._locked():
                entries: list[dict[str, Any]] = []
                good_bytes = 0
                with open(path, "rb") as f:
                    for line in f:
                        if not line.endswith(b"\n"):
                            break  # torn final write
                        try:
                            entries.append(json.loads(line))
                        except ValueError:
                            raise LogCorrupt(
                                f"{path}: line {len(entries) + 1} is not JSON"
                            ) from None
                        good_bytes += len(line)
                self._count, self._head = verify_log(entries)
                if os.fstat(self._fd).st_size != good_bytes:
                    os.ftruncate(self._fd, good_bytes)
                self._size = good_bytes
        except BaseException:
            os.close(self._fd)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        """Take in entries other processes appended (call with the lock held)."""
        size = os.fstat(self._fd).st_size
        if size == self._size:
            return
        tail = os.pread(self._fd, size - self._size, self._size)
        whole = tail.rfind(b"\n") + 1
        if whole != len(tail):
            # A process died mid-write (it held the lock): cut its torn line off.
            os.ftruncate(self._fd, self._size + whole)
            tail, size = tail[:whole], self._size + whole
        # The other writers are this proxy's own processes, and the whole chain is
        # verified at every open (and by anyone reading GET /log): take their last
        # entry as the new head, checking only that the count adds up.
        lines = tail.splitlines()
        if lines:
            try:
                last = json.loads(lines[-1])
                prev, count = bytes.fromhex(last["hash"]), int(last["seq"])
            except (ValueError, KeyError, TypeError):
                raise LogCorrupt(
                    f"{self.path}: entry {self._count + len(lines)} is malformed"
                ) from None
            if count != self._count + len(lines):
                raise LogCorrupt(f"{self.path}: entry {count} does not follow entry {self._count}")
        else:
            prev, count = self._head, self._count
        self._count, self._head, self._size = count, prev, size

    @property
    def head(self) -> tuple[int, bytes]:
        """``(entries, digest)`` of the log as written so far (by every process)."""
        with self._locked():
            self._catch_up()
            return self._count, self._head

    def append(self, **fields: Any) -> tuple[int, bytes]:
        """Add one entry (``event``, ``outcome``, ``account``…); returns ``(seq, hash)``."""
        with self._locked():
            self._catch_up()
            entry: dict[str, Any] = {
                "format": LOG_FORMAT,
                "seq": self._count + 1,
                "time": int(time.time()),
                **fields,
                "prev": self._head.hex(),
            }
            digest = hashlib.sha256(self._head + _canonical(entry)).digest()  # = entry_hash
            entry["hash"] = digest.hex()
            line = _canonical(entry) + b"\n"
            os.write(self._fd, line)
            self._count += 1
            self._head = digest
            self._size += len(line)
            return self._count, digest

    def sync(self) -> tuple[int, bytes]:
        """Flush the file to disk; returns the head that is now durable (anchor that)."""
        with self._locked():
            self._catch_up()
            os.fsync(self._fd)
            return self._count, self._head

    def read_bytes(self) -> bytes:
        """The whole log as written (complete lines only)."""
        with self._locked():
            return self.path.read_bytes()

    def read_lines(self, offset: int, limit: int) -> list[bytes]:
        """Up to `limit` complete lines from entry `offset` on (0 is the first entry).

        Reads without the lock, a line at a time: appends are one ``write`` each, and
        a line still being written (no newline yet) is left for the next read.
        """
        lines: list[bytes] = []
        with open(self.path, "rb") as f:
            for number, line in enumerate(f):
                if len(lines) >= limit or not line.endswith(b"\n"):
                    break
                if number >= offset:
                    lines.append(line)
        return lines

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
