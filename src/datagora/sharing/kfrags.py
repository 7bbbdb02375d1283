"""A proxy's durable store of key fragments (SQLite, one row per dataset version, consumer
and fragment batch).

An owner may delegate to one consumer more than once (its agent and its CLI both
react to a grant; a consumer gets a new key): each delegation is a *batch* of
fragments from one ``generate_kfrags`` call, and fragments of different batches do
not combine. So the store keeps the :data:`KEEP_BATCHES` newest batches of each
dataset version and consumer side by side, and the proxy answers with a capsule
fragment from each; the consumer combines fragments of one batch.

A batch is kept as first delivered: a later delivery of the same batch with another
fragment is refused (:meth:`KfragStore.put` returns False), never written over it, so
nothing replayed or raced can mix fragments of different deliveries under one batch.
The same delivery again (an agent retrying a lost answer) is accepted and changes
nothing.

Rows are written in one transaction each with ``synchronous=FULL``, so a fragment
the proxy acknowledged survives a crash. Fragments are verified when stored and
again the first time a process uses them; the verified form is kept in memory only.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from datagora.crypto.pre import VerifiedKeyFrag, verify_kfrag
from datagora.sharing.errors import SharingError

__all__ = ["KEEP_BATCHES", "KfragRecord", "KfragStore"]

_SCHEMA_VERSION: Final = 2
KEEP_BATCHES: Final = 4
"""Fragment batches kept per dataset version and consumer (older ones are dropped)."""
_CACHED_KEYS: Final = 10_000


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
    batch: bytes
    stored_at: int


def _record(row: tuple[Any, ...]) -> KfragRecord:
    dataset, version, consumer, consumer_key, kfrag, vk, dk, owner, grant, t, n, at, batch = row[
        :13
    ]
    return KfragRecord(
        int(dataset), version, consumer, consumer_key, kfrag, vk, dk, owner, int(grant), t, n,
        batch, at,
    )  # fmt: skip


class KfragStore:
    """Key fragments by ``(dataset, version, consumer, batch)``; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._verified: dict[tuple[int, int, str, bytes], tuple[bytes, VerifiedKeyFrag]] = {}
        # What get() answered, until this store (or another process) next writes: a
        # proxy reads its fragments on every re-encryption, writes them on delegation.
        self._rows: dict[tuple[int, int, str], list[KfragRecord]] = {}
        self._data_version = -1
        try:
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise SharingError(
                    f"{path} is a kfrag store of schema {version}; this proxy reads schema "
                    f"{_SCHEMA_VERSION}: move the file away and have the owners delegate again"
                )
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS kfrags ("
                " dataset TEXT NOT NULL, version INTEGER NOT NULL, consumer TEXT NOT NULL,"
                " consumer_key BLOB NOT NULL, kfrag BLOB NOT NULL, verifying_key BLOB NOT NULL,"
                " delegating_key BLOB NOT NULL, owner TEXT NOT NULL, grant_id TEXT NOT NULL,"
                " threshold INTEGER NOT NULL, shares INTEGER NOT NULL, stored_at INTEGER NOT NULL,"
                " batch BLOB NOT NULL, seq INTEGER NOT NULL,"
                " PRIMARY KEY (dataset, version, consumer, batch)) WITHOUT ROWID;"
                f"PRAGMA user_version={_SCHEMA_VERSION};"
            )
        except sqlite3.Error as exc:
            raise SharingError(f"cannot open the kfrag store {path}: {exc}") from None

    def put(self, record: KfragRecord, verified: VerifiedKeyFrag) -> bool:
        """Store ``record``'s fragment unless its batch is held already; keep the newest
        batches only. False if the batch is held with *another* fragment (the first
        one stays); True if stored now or held already with this very fragment."""
        consumer = record.consumer.lower()
        key = (record.dataset, record.version, consumer, record.batch)
        where = "dataset = ? AND version = ? AND consumer = ?"
        args = (str(record.dataset), record.version, consumer)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                held = self._db.execute(
                    f"SELECT kfrag FROM kfrags WHERE {where} AND batch = ?",
                    (*args, record.batch),
                ).fetchone()
                if held is not None:
                    self._db.execute("ROLLBACK")
                    return bytes(held[0]) == record.kfrag
                seq = self._db.execute(
                    f"SELECT COALESCE(MAX(seq), 0) + 1 FROM kfrags WHERE {where}", args
                ).fetchone()[0]
                self._db.execute(
                    "INSERT INTO kfrags VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        *args,
                        record.consumer_key,
                        record.kfrag,
                        record.verifying_key,
                        record.delegating_key,
                        record.owner,
                        str(record.grant),
                        record.threshold,
                        record.shares,
                        record.stored_at or int(time.time()),
                        record.batch,
                        seq,
                    ),
                )
                self._db.execute(
                    f"DELETE FROM kfrags WHERE {where} AND seq <= ?", (*args, seq - KEEP_BATCHES)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._rows.pop((record.dataset, record.version, consumer), None)
            self._verified[key] = (record.kfrag, verified)
        return True

    def get(self, dataset: int, version: int, consumer: str) -> list[KfragRecord]:
        """The fragments held for ``consumer`` on ``dataset`` ``version``, newest batch first."""
        key = (dataset, version, consumer.lower())
        with self._lock:
            # Another process of this proxy (--workers) may have written: SQLite's
            # data_version changes on every commit by another connection.
            changed = self._db.execute("PRAGMA data_version").fetchone()[0]
            if changed != self._data_version:
                self._rows.clear()
                self._data_version = changed
            cached = self._rows.get(key)
            if cached is not None:
                return list(cached)
            rows = self._db.execute(
                "SELECT * FROM kfrags WHERE dataset = ? AND version = ? AND consumer = ? "
                "ORDER BY seq DESC",
                (str(dataset), version, key[2]),
            ).fetchall()
            records = [_record(row) for row in rows]
            if len(self._rows) >= _CACHED_KEYS:
                self._rows.clear()
            self._rows[key] = records
        return list(records)

    def verified(self, record: KfragRecord) -> VerifiedKeyFrag:
        """The verified fragment of ``record`` (checked once per process, then remembered).

        Raises :class:`~datagora.crypto.errors.BadFragment` if the stored bytes do not verify.
        """
        key = (record.dataset, record.version, record.consumer.lower(), record.batch)
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
