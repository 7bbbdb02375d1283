"""The nonce stores: the SQLite store's schema and pruning; the proxy's record-file store,
shared by processes, crash-tolerant, compacted."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from datagora.crypto import nonces
from datagora.crypto.errors import NonceFileCorrupt, RequestRefused
from datagora.crypto.nonces import FileNonceStore, SqliteNonceStore

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
NOW = 1_800_000_000


def nonce(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_remembers_across_restart_and_per_account(tmp_path: Path) -> None:
    path = tmp_path / "nonces.log"
    with FileNonceStore(path) as store:
        assert store.remember(ALICE, nonce(1), NOW + 60, NOW)
        assert not store.remember(ALICE.upper().replace("0X", "0x"), nonce(1), NOW + 60, NOW)
        assert store.remember(BOB, nonce(1), NOW + 60, NOW)
    assert path.stat().st_size == 2 * 64
    with FileNonceStore(path) as again:
        assert not again.remember(ALICE, nonce(1), NOW + 90, NOW + 30)
        # Once its request expired, the pair is forgotten.
        assert again.remember(ALICE, nonce(1), NOW + 120, NOW + 60)
        assert len(again) == 1  # BOB's expired too


def test_sqlite_store_refuses_a_foreign_schema(tmp_path: Path) -> None:
    path = tmp_path / "nonces.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=7")
    with pytest.raises(RequestRefused, match="schema 7"):
        SqliteNonceStore(path)


def test_an_expired_nonce_not_yet_pruned_may_be_used_again(tmp_path: Path) -> None:
    with SqliteNonceStore(tmp_path / "nonces.sqlite") as store:
        assert store.remember(ALICE, nonce(1), NOW, NOW)  # expired at once
        # Pruning runs at most once a second: the expired row is still there, taken over.
        assert store.remember(ALICE, nonce(1), NOW + 50, NOW)
        assert not store.remember(ALICE, nonce(1), NOW + 60, NOW)


def test_a_second_store_sees_the_first_ones_nonces(tmp_path: Path) -> None:
    with FileNonceStore(tmp_path / "n.log") as one, FileNonceStore(tmp_path / "n.log") as two:
        assert one.remember(ALICE, nonce(7), NOW + 60, NOW)
        assert not two.remember(ALICE, nonce(7), NOW + 60, NOW)
        assert two.remember(ALICE, nonce(8), NOW + 60, NOW)
        assert not one.remember(ALICE, nonce(8), NOW + 60, NOW)


@pytest.mark.parametrize("kind", [FileNonceStore, SqliteNonceStore])
def test_a_closed_store_refuses_and_leaves_reused_descriptors_alone(
    kind: type[FileNonceStore | SqliteNonceStore], tmp_path: Path
) -> None:
    store = kind(tmp_path / "nonces")
    store.close()
    # The descriptor numbers the store held now belong to other files.
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)
    try:
        store.close()
        os.fstat(other)  # still open: the second close did not touch it
        with pytest.raises(RequestRefused, match="is closed"):
            store.remember(ALICE, nonce(1), NOW + 60, NOW)
    finally:
        os.close(other)


def test_a_record_cut_short_by_a_crash_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "nonces.log"
    with FileNonceStore(path) as store:
        store.remember(ALICE, nonce(1), NOW + 60, NOW)
        store.remember(ALICE, nonce(2), NOW + 60, NOW)
    with open(path, "ab") as f:
        f.write(os.urandom(40))  # a torn third record
    with FileNonceStore(path) as store:
        assert path.stat().st_size == 2 * 64
        assert not store.remember(ALICE, nonce(2), NOW + 60, NOW)
        assert store.remember(ALICE, nonce(3), NOW + 60, NOW)


def test_a_damaged_record_before_the_last_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "nonces.log"
    with FileNonceStore(path) as store:
        for i in range(3):
            store.remember(ALICE, nonce(i), NOW + 60, NOW)
    data = bytearray(path.read_bytes())
    data[64 + 30] ^= 1  # a bit of the second record's nonce
    path.write_bytes(bytes(data))
    with pytest.raises(NonceFileCorrupt, match="record 2"):
        FileNonceStore(path)


def test_compaction_keeps_live_nonces_for_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nonces, "_COMPACT_MIN_BYTES", 64 * 50)
    path = tmp_path / "nonces.log"
    with FileNonceStore(path) as one, FileNonceStore(path) as two:
        for i in range(40):  # expire at once
            assert one.remember(ALICE, nonce(i), NOW + 1, NOW)
        assert two.remember(BOB, nonce(999), NOW + 600, NOW)  # lives on
        inode = path.stat().st_ino
        for i in range(40, 60):
            assert one.remember(ALICE, nonce(i), NOW + 600, NOW + 2)
        assert path.stat().st_ino != inode  # rewritten
        assert path.stat().st_size < 50 * 64
        # The other store reads the new file: every live nonce is still refused.
        assert not two.remember(BOB, nonce(999), NOW + 600, NOW + 3)
        assert not two.remember(ALICE, nonce(59), NOW + 600, NOW + 3)
        assert two.remember(ALICE, nonce(0), NOW + 600, NOW + 3)  # expired: forgotten


def test_takes_over_an_old_sqlite_store(tmp_path: Path) -> None:
    legacy = tmp_path / "nonces.sqlite"
    with SqliteNonceStore(legacy) as old:
        assert old.remember(ALICE, nonce(5), NOW + 60, NOW)
    with FileNonceStore(tmp_path / "nonces.log", legacy_sqlite=legacy) as store:
        assert not store.remember(ALICE, nonce(5), NOW + 60, NOW + 1)
    assert not legacy.exists() and (tmp_path / "nonces.sqlite.imported").exists()
    with sqlite3.connect(tmp_path / "nonces.sqlite.imported") as db:
        assert db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0] == 1


_RACER = """
import sys
from pathlib import Path
from datagora.crypto.nonces import FileNonceStore
store = FileNonceStore(Path(sys.argv[1]))
won = sum(store.remember(sys.argv[2], i.to_bytes(32, "big"), 10**10, 0) for i in range(400))
print(won)
"""


def test_processes_racing_for_the_same_nonces_accept_each_once(tmp_path: Path) -> None:
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path / "nonces.log"), ALICE],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    won = [int(r.communicate(timeout=60)[0]) for r in racers]
    assert sum(won) == 400
    assert (tmp_path / "nonces.log").stat().st_size == 400 * 64


class Syncs:
    """Records which files and directories were fsync-ed / fdatasync-ed (by inode)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inodes: list[int] = []
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)

            def spy(fd: int, real=real) -> None:  # type: ignore[no-untyped-def]
                self.inodes.append(os.fstat(fd).st_ino)
                real(fd)

            monkeypatch.setattr(os, name, spy)

    def saw(self, path: Path) -> bool:
        return path.stat().st_ino in self.inodes


def test_an_accepted_nonce_is_synced_before_remember_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OS crash must not forget an accepted nonce (it would reopen a replay window)."""
    path = tmp_path / "nonces.log"
    syncs = Syncs(monkeypatch)
    with FileNonceStore(path) as store:
        syncs.inodes.clear()
        assert store.remember(ALICE, nonce(1), NOW + 60, NOW)
        assert syncs.saw(path)
        syncs.inodes.clear()
        assert not store.remember(ALICE, nonce(1), NOW + 60, NOW)  # refused: nothing written
        assert syncs.inodes == []
    with SqliteNonceStore(tmp_path / "nonces.sqlite") as sql:
        assert sql._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_concurrent_checks_share_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    syncs = Syncs(monkeypatch)
    with FileNonceStore(tmp_path / "nonces.log") as store:
        syncs.inodes.clear()
        accepted: list[bool] = []

        def check(start: int) -> None:
            for i in range(start, start + 50):
                accepted.append(store.remember(ALICE, nonce(i), NOW + 60, NOW))

        threads = [threading.Thread(target=check, args=(t * 1000,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert accepted.count(True) == 400
    assert 0 < len(syncs.inodes) <= 400  # never more than one per record


def test_compaction_and_takeover_sync_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nonces, "_COMPACT_MIN_BYTES", 64 * 50)
    legacy = tmp_path / "nonces.sqlite"
    with SqliteNonceStore(legacy) as old:
        assert old.remember(BOB, nonce(5), NOW + 60, NOW)
    syncs = Syncs(monkeypatch)
    with FileNonceStore(tmp_path / "nonces.log", legacy_sqlite=legacy) as store:
        assert syncs.saw(tmp_path)  # the rename to *.imported is durable
        syncs.inodes.clear()
        for i in range(40):
            assert store.remember(ALICE, nonce(i), NOW + 1, NOW)
        for i in range(40, 60):
            assert store.remember(ALICE, nonce(i), NOW + 600, NOW + 2)
        assert syncs.saw(tmp_path)  # the compacted file's rename too


def test_write_atomically_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datagora.atomic import write_atomically

    syncs = Syncs(monkeypatch)
    write_atomically(tmp_path / "sub" / "f.json", "{}")
    assert (tmp_path / "sub" / "f.json").read_text() == "{}"
    assert syncs.saw(tmp_path / "sub/f.json") and syncs.saw(tmp_path / "sub")
    assert syncs.inodes[-1] == (tmp_path / "sub").stat().st_ino  # after the rename


def test_a_deferred_store_syncs_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy on an event loop defers the sync to a thread, then waits for it."""
    path = tmp_path / "nonces.log"
    syncs = Syncs(monkeypatch)
    with FileNonceStore(path, defer_sync=True) as store:
        syncs.inodes.clear()
        assert store.remember(ALICE, nonce(1), NOW + 60, NOW)
        assert store.remember(ALICE, nonce(2), NOW + 60, NOW)
        assert syncs.inodes == []
        store.sync(store.appended)
        assert syncs.inodes == [path.stat().st_ino]  # one sync for both
        store.sync(store.appended)
        assert len(syncs.inodes) == 1  # nothing new: no second sync
