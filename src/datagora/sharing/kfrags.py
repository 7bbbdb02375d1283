"""A proxy's durable store of key fragments (SQLite, one row per dataset version and consumer).

Rows are written in one transaction each (``INSERT OR REPLACE``: an owner may
re-delegate, e.g. to a consumer's new key), with ``synchronous=FULL``, so a
fragment the proxy acknowledged survives a crash. Fragments are verified when
stored and again the first time a process uses them; the verified form is kept in
memory only.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from datagora.crypto.pre import VerifiedKeyFrag, verify_kfrag
from datagora.sharing.errors import SharingError

__all__ = ["KfragRecord", "KfragStore"]

_SCHEMA_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class KfragRecord:
    """One stored fragment and what it was made for."""

    dataset: int
    version: int
    consumer: str
    consumer_key: bytes
    kfrag: bytes
    verifying_key: bytes
    delegating_key: bytes
    owner: str
    grant: int
    threshold: int
    shares: int
    stored_at: int


class KfragStore:
    """Key fragments by ``(dataset, version, consumer)``; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._verified: dict[tuple[int, int, str], tuple[bytes, VerifiedKeyFrag]] = {}
        try:
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise SharingError(f"{path} is a kfrag store of schema {version}; expected 1")
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS kfrags ("
                " dataset TEXT NOT NULL, version INTEGER NOT NULL, consumer TEXT NOT NULL,"
                " consumer_key BLOB NOT NULL, kfrag BLOB NOT NULL, verifying_key BLOB NOT NULL,"
                " delegating_key BLOB NOT NULL, owner TEXT NOT NULL, grant_id TEXT NOT NULL,"
                " threshold INTEGER NOT NULL, shares INTEGER NOT NULL, stored_at INTEGER NOT NULL,"
                " PRIMARY KEY (dataset, version, consumer)) WITHOUT ROWID;"
                f"PRAGMA user_version={_SCHEMA_VERSION};"
            )
        except sqlite3.Error as exc:
            raise SharingError(f"cannot open the kfrag store {path}: {exc}") from None

    def put(self, record: KfragRecord, verified: VerifiedKeyFrag) -> None:
        """Store (or replace) the fragment of ``record``'s dataset version and consumer."""
        key = (record.dataset, record.version, record.consumer.lower())
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO kfrags VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    str(record.dataset),
                    record.version,
                    record.consumer.lower(),
                    record.consumer_key,
                    record.kfrag,
                    record.verifying_key,
                    record.delegating_key,
                    record.owner,
                    str(record.grant),
                    record.threshold,
                    record.shares,
                    record.stored_at or int(time.time()),
                ),
            )
            self._verified[key] = (record.kfrag, verified)

    def get(self, dataset: int, version: int, consumer: str) -> KfragRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM kfrags WHERE dataset = ? AND version = ? AND consumer = ?",
                (str(dataset), version, consumer.lower()),
            ).fetchone()
        if row is None:
            return None
        return KfragRecord(
            int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7], int(row[8]),
            row[9], row[10], row[11],
        )  # fmt: skip

    def verified(self, record: KfragRecord) -> VerifiedKeyFrag:
        """The verified fragment of ``record`` (checked once per process, then remembered).

        Raises :class:`~datagora.crypto.pre.BadFragment` if the stored bytes do not verify.
        """
        key = (record.dataset, record.version, record.consumer.lower())
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None and cached[0] == record.kfrag:
            return cached[1]
        verified = verify_kfrag(
            record.kfrag, record.verifying_key, record.delegating_key, record.consumer_key
        )
        with self._lock:
            self._verified[key] = (record.kfrag, verified)
        return verified

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM kfrags").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
