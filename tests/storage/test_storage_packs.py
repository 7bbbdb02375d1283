"""The pack store on a real disk: batches all or nothing, crash recovery, rot,
deletion and compaction, the legacy file-per-share import."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datagora.storage.blocks import content_address
from datagora.storage.errors import VanishedError
from datagora.storage.packs import Holding, PackStore, share_location
from datagora.storage.shares import ShareHeader


def named(data: bytes) -> tuple[bytes, bytes]:
    return content_address(data), data


def share(dataset: bytes, version: int, payload: bytes) -> bytes:
    return ShareHeader(dataset, version, 0, 0, 2, 4, len(payload)).pack() + payload


def put(store: PackStore, blobs: list[bytes]) -> list[tuple[bool, bool]]:
    with store.writer() as writer:
        for data in blobs:
            name = content_address(data)
            writer.start(name, store.holding(name))
            writer.write(data[:7])
            writer.write(data[7:])
            assert writer.finish()
        return writer.commit()


def segment_sizes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (root / "packs").glob("*.pack")}


def test_a_batch_is_appended_indexed_and_read_back(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    blobs = [bytes([i]) * (50 + i) for i in range(16)]
    assert put(store, blobs) == [(True, True)] * 16
    for data in blobs:
        name = content_address(data)
        assert store.read(name) == data and store.size(name) == len(data)
        assert store.holding(name) is Holding.INTACT
    assert (store.count, store.bytes) == (16, sum(map(len, blobs)))
    # One segment for the whole batch: no file per share.
    assert segment_sizes(tmp_path) == {"00000001.pack": sum(map(len, blobs))}
    assert put(store, [*blobs[:3], b"new"]) == [(False, False)] * 3 + [(True, True)]
    assert store.count == 17
    store.close()
    reopened = PackStore(tmp_path)
    assert reopened.read(hashlib.sha256(b"new").digest()) == b"new" and reopened.count == 17
    assert reopened.read(b"\0" * 32) is None and reopened.size(b"\0" * 32) is None


def test_a_refused_batch_leaves_nothing(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    put(store, [b"kept"])
    before = segment_sizes(tmp_path)
    with store.writer() as writer:
        name, data = named(b"good")
        writer.start(name)
        writer.write(data)
        assert writer.finish()
        writer.start(named(b"claimed")[0])
        writer.write(b"other bytes")
        assert not writer.finish()
    # Leaving the writer uncommitted cut the batch off the segment.
    assert segment_sizes(tmp_path) == before
    assert store.read(name) is None and store.count == 1


def test_concurrent_writers_get_their_own_segments(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    with store.writer() as first, store.writer() as second:
        for writer, data in ((first, b"one"), (second, b"two")):
            writer.start(named(data)[0])
            writer.write(data)
            assert writer.finish()
        second.commit()
        first.commit()
    assert len(segment_sizes(tmp_path)) == 2
    assert store.read(named(b"one")[0]) == b"one" and store.read(named(b"two")[0]) == b"two"


def test_segments_roll_over_past_their_size(tmp_path: Path) -> None:
    store = PackStore(tmp_path, segment_bytes=100)
    for i in range(5):
        put(store, [bytes([i]) * 60])
    # A segment takes batches until it is past 100 bytes, then a new one starts.
    assert sorted(segment_sizes(tmp_path).values()) == [60, 120, 120]
    store.close()


def test_a_rotten_copy_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    data = b"bytes that will rot" * 4
    put(store, [data])
    where = share_location(tmp_path, content_address(data).hex())
    assert where is not None
    path, offset, length = where
    assert length == len(data) and path.read_bytes()[offset : offset + length] == data
    with path.open("r+b") as handle:
        handle.seek(offset + 3)
        handle.write(b"X")
    assert store.holding(named(data)[0]) is Holding.ROTTEN
    assert put(store, [data]) == [(True, False)]
    assert store.read(named(data)[0]) == data and (store.count, store.bytes) == (1, len(data))


def test_entries_delete_and_compact(tmp_path: Path) -> None:
    store = PackStore(tmp_path, segment_bytes=1000)
    old, new = b"\x01" * 32, b"\x02" * 32
    shares = [share(old, 1, bytes([i]) * 200) for i in range(4)]
    others = [share(new, 3, b"payload"), b'{"a manifest": true}']
    put(store, shares)  # 1032 bytes: the segment is full, sealed
    put(store, others)
    listed = store.entries(old)
    assert {e.name for e in listed} == {named(s)[0] for s in shares}
    assert {(e.dataset, e.version) for e in listed} == {(old, 1)}
    everything = {(e.dataset, e.version) for e in store.entries()}
    assert everything == {(old, 1), (new, 3), (None, None)}

    assert store.compact() == 0  # nothing deleted yet
    assert store.delete([named(s)[0] for s in shares[:3]] + [b"\0" * 32]) == 3
    assert store.read(named(shares[0])[0]) is None and store.count == 3
    assert store.compact() == 1
    sizes = segment_sizes(tmp_path)
    assert "00000001.pack" not in sizes  # rewritten and removed
    for data in [shares[3], *others]:
        assert store.read(named(data)[0]) == data
    assert store.bytes == sum(map(len, [shares[3], *others]))
    store.close()
    reopened = PackStore(tmp_path)
    assert {e.name for e in reopened.entries()} == {named(d)[0] for d in [shares[3], *others]}


def test_placements_are_indexed_with_the_batch(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    manifest = b"\x07" * 32
    record, data = named(b"a placement record")
    with store.writer() as writer:
        writer.start(record)
        writer.write(data)
        writer.finish()
        writer.commit([(manifest, record, 4)])
    assert store.placements(manifest) == [(record, 4)]
    store.delete([record])
    assert store.placements(manifest) == []  # only records still held are listed


_KILLED_MID_BATCH = """
import hashlib, os, sys
from pathlib import Path
from datagora.storage.packs import PackStore
store = PackStore(Path(sys.argv[1]))
with store.writer() as writer:
    for data in (b"committed one", b"committed two"):
        writer.start(hashlib.sha256(data).digest()); writer.write(data); writer.finish()
    writer.commit()
writer = store.writer()
writer.start(hashlib.sha256(b"never committed").digest())
writer.write(b"never committed")
writer.finish()
os.kill(os.getpid(), 9)
"""


def test_a_node_killed_mid_batch_serves_only_committed_shares(tmp_path: Path) -> None:
    script = textwrap.dedent(_KILLED_MID_BATCH)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False)
    assert done.returncode == -9
    (segment,) = (tmp_path / "packs").glob("*.pack")
    committed = len(b"committed one" + b"committed two")
    assert segment.stat().st_size == committed + len(b"never committed")
    store = PackStore(tmp_path)
    assert segment.stat().st_size == committed  # the uncommitted tail is cut off
    assert store.read(named(b"never committed")[0]) is None
    assert store.read(named(b"committed two")[0]) == b"committed two"
    assert put(store, [b"after the restart"]) == [(True, True)]
    assert store.read(named(b"committed one")[0]) == b"committed one"


def test_the_old_file_per_share_layout_is_imported(tmp_path: Path) -> None:
    blobs = [b"legacy share %d" % i for i in range(5)]
    for data in blobs:
        name = content_address(data).hex()
        (tmp_path / "shares" / name[:2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "shares" / name[:2] / name).write_bytes(data)
    rotten = hashlib.sha256(b"original").hexdigest()
    (tmp_path / "shares" / rotten[:2]).mkdir(exist_ok=True)
    (tmp_path / "shares" / rotten[:2] / rotten).write_bytes(b"rotted")
    manifest = "ab" * 32
    record = hashlib.sha256(blobs[0]).hexdigest()
    (tmp_path / "placements" / manifest).mkdir(parents=True)
    (tmp_path / "placements" / manifest / record).write_text("3")

    store = PackStore(tmp_path)
    assert store.import_files(tmp_path / "shares", tmp_path / "placements") == 5
    assert not (tmp_path / "shares").exists() and not (tmp_path / "placements").exists()
    for data in blobs:
        assert store.read(named(data)[0]) == data
    assert store.read(bytes.fromhex(rotten)) is None
    assert store.placements(bytes.fromhex(manifest)) == [(bytes.fromhex(record), 3)]
    assert store.count == 5


def test_share_location_of_a_missing_name(tmp_path: Path) -> None:
    assert share_location(tmp_path, "00" * 32) is None
    PackStore(tmp_path).close()
    assert share_location(tmp_path, "00" * 32) is None


def test_a_collector_cannot_undo_an_upload_that_raced_it(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    old, fresh = named(b"stored long ago"), named(b"stored just now")
    put(store, [old[1], fresh[1]])
    stored_at = {e.name: e.stored_at for e in store.entries()}
    # The collector decided on both, but one was uploaded again (restamped) meanwhile.
    with store._db_lock, store._db:
        store._db.execute("UPDATE shares SET stored_at = 0 WHERE name = ?", (old[0],))
    assert store.delete([old[0], fresh[0]], stored_before=stored_at[fresh[0]]) == 1
    assert store.read(old[0]) is None and store.read(fresh[0]) == fresh[1]
    assert store.count == 1
    store.close()


def test_an_upload_of_a_blob_held_intact_restamps_it_or_fails_if_it_vanished(
    tmp_path: Path,
) -> None:
    store = PackStore(tmp_path)
    name, data = named(b"kept by a second upload")
    put(store, [data])
    with store._db_lock, store._db:
        store._db.execute("UPDATE shares SET stored_at = 5 WHERE name = ?", (name,))
    assert put(store, [data]) == [(False, False)]
    (entry,) = store.entries()
    assert entry.stored_at > 5
    # Held when the upload began, deleted before it committed: refused, nothing stored.
    before = segment_sizes(tmp_path)
    with store.writer() as writer:
        writer.start(name, store.holding(name))
        writer.write(data)
        assert writer.finish()
        store.delete([name])
        with pytest.raises(VanishedError, match="send it again"):
            writer.commit()
    assert store.read(name) is None and segment_sizes(tmp_path) == before
    store.close()
