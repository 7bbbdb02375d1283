"""Share batches: the frame format (pure, hypothesis) and the node's batch
endpoints under a real uvicorn server on loopback."""

from __future__ import annotations

import hashlib
import itertools
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from storage_helpers import SigningAuth, ThreadNode, frame_index

from datagora.storage.auth import DEFAULT_CHAIN_ID, frame_index_digest
from datagora.storage.batch import (
    BATCH_MAGIC,
    MAX_BATCH_SHARES,
    EntryData,
    EntryEnd,
    EntryStart,
    FrameReader,
    decode_frame,
    encode_frame,
    frame_size,
)
from datagora.storage.errors import BatchFormatError, BatchTooLargeError
from datagora.storage.packs import stored_names

CAP = 4096
BIG = 1 << 30

blobs = st.lists(st.binary(max_size=300), max_size=12)


def named(data: bytes) -> tuple[bytes, bytes]:
    return hashlib.sha256(data).digest(), data


def split_feed(reader: FrameReader, body: bytes, cuts: list[int]) -> list[tuple[bytes, bytes]]:
    """Feed ``body`` in pieces cut at ``cuts`` and collect the entries."""
    entries: list[tuple[bytes, bytes]] = []
    name, parts = b"", bytearray()
    bounds = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        for event in reader.feed(body[start:end]):
            if isinstance(event, EntryStart):
                assert event.index == len(entries)
                name, parts = event.name, bytearray()
            elif isinstance(event, EntryData):
                parts += event.data
            else:
                assert isinstance(event, EntryEnd) and event.index == len(entries)
                entries.append((name, bytes(parts)))
    reader.finish()
    return entries


@given(blobs, st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_frame_round_trips_however_it_is_split(datas: list[bytes], cuts: list[int]) -> None:
    entries = [named(d) for d in datas]
    body = encode_frame(entries)
    assert len(body) == frame_size([len(d) for d in datas])
    assert decode_frame(body, BIG, BIG) == entries
    assert split_feed(FrameReader(BIG, BIG), body, cuts) == entries


@given(blobs.filter(bool), st.data())
def test_any_truncation_or_extra_byte_is_refused(datas: list[bytes], data: st.DataObject) -> None:
    body = encode_frame([named(d) for d in datas])
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    with pytest.raises(BatchFormatError, match="truncated"):
        decode_frame(body[:cut], BIG, BIG)
    with pytest.raises(BatchFormatError, match="after the last entry"):
        decode_frame(body + b"\0", BIG, BIG)


def test_caps_and_magic() -> None:
    body = encode_frame([named(b"a" * 10), named(b"b" * 20)])
    with pytest.raises(BatchTooLargeError, match=r"entry 1 .* 20 bytes"):
        decode_frame(body, max_entry=15, max_total=BIG)
    with pytest.raises(BatchTooLargeError, match="cap of 25 bytes"):
        decode_frame(body, max_entry=BIG, max_total=25)
    with pytest.raises(BatchTooLargeError, match="at most 1 entries"):
        decode_frame(body, BIG, BIG, max_count=1)
    with pytest.raises(BatchFormatError, match="magic"):
        decode_frame(b"XXXX" + body[4:], BIG, BIG)
    # The count is checked from the header alone, before any entry arrives.
    reader = FrameReader(BIG, BIG)
    with pytest.raises(BatchTooLargeError):
        list(reader.feed(struct.pack(">4sI", BATCH_MAGIC, MAX_BATCH_SHARES + 1)))
    assert decode_frame(encode_frame([]), BIG, BIG) == []


# -- the node's endpoints ------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[httpx.Client]:
    with ThreadNode(tmp_path, CAP) as client:
        yield client


def stored(data_dir: Path) -> set[str]:
    return stored_names(data_dir)


def packed_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "packs").glob("*.pack"))


def put_batch(node: httpx.Client, entries: list[tuple[bytes, bytes]]) -> httpx.Response:
    return node.put("/shares", content=encode_frame(entries))


def test_batch_put_stores_every_share_and_batch_get_serves_them(
    node: httpx.Client, tmp_path: Path
) -> None:
    entries = [named(bytes([i]) * (100 + i)) for i in range(5)]
    first = put_batch(node, entries)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["count"], body["stored"]) == (5, 5)
    assert [s["name"] for s in body["shares"]] == [n.hex() for n, _ in entries]
    assert stored(tmp_path) == {n.hex() for n, _ in entries}
    assert packed_bytes(tmp_path) == sum(len(d) for _, d in entries)  # one segment, no files
    for name, data in entries:
        assert node.get(f"/shares/{name.hex()}").content == data
    health = node.get("/health").json()
    assert (health["shares"], health["bytes"]) == (5, sum(len(d) for _, d in entries))
    assert health["max_batch_shares"] == MAX_BATCH_SHARES and health["max_batch_bytes"] >= CAP

    again = put_batch(node, entries[:2])
    assert again.status_code == 200 and again.json()["stored"] == 0
    assert node.get("/health").json()["shares"] == 5

    missing = named(b"never stored")[0]
    wanted = [entries[3][0], missing, entries[0][0]]
    got = node.post("/shares/batch-get", json={"names": [n.hex() for n in wanted]})
    assert got.status_code == 200
    assert got.headers["content-length"] == str(len(got.content))
    assert decode_frame(got.content, BIG, BIG) == [entries[3], entries[0]]


def test_a_share_that_does_not_match_its_name_rejects_the_whole_batch(
    node: httpx.Client, tmp_path: Path
) -> None:
    good = [named(b"first share"), named(b"second share")]
    bad_name = named(b"what it claims to be")[0]
    response = put_batch(node, [*good, (bad_name, b"something else"), named(b"fourth")])
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert f"share 2 ({bad_name.hex()})" in detail and "nothing" in detail
    assert stored(tmp_path) == set() and packed_bytes(tmp_path) == 0
    assert node.get("/health").json()["shares"] == 0


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (encode_frame([named(b"ok"), named(b"x" * (CAP + 1))]), 413, "larger than the cap"),
        (encode_frame([named(b"ok"), named(b"cut short")])[:-3], 400, "truncated"),
        (encode_frame([named(b"ok")]) + b"!", 400, "after the last entry"),
        (b"NOPE" + encode_frame([named(b"ok")])[4:], 400, "magic"),
    ],
    ids=["oversized-share", "truncated", "trailing-bytes", "bad-magic"],
)
def test_malformed_or_oversized_batches_store_nothing(
    node: httpx.Client, tmp_path: Path, body: bytes, status: int, reason: str
) -> None:
    response = node.put("/shares", content=body)
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert stored(tmp_path) == set() and packed_bytes(tmp_path) == 0


def test_batch_get_refuses_bad_names_and_too_many(node: httpx.Client) -> None:
    assert node.post("/shares/batch-get", json={"names": ["../etc"]}).status_code == 400
    too_many = ["0" * 64] * (MAX_BATCH_SHARES + 1)
    assert node.post("/shares/batch-get", json={"names": too_many}).status_code == 422
    empty = node.post("/shares/batch-get", json={"names": []})
    assert empty.status_code == 200 and decode_frame(empty.content, BIG, BIG) == []


def test_batch_endpoints_are_in_the_openapi(node: httpx.Client) -> None:
    paths = node.get("/openapi.json").json()["paths"]
    put = paths["/shares"]["put"]
    assert "application/octet-stream" in put["requestBody"]["content"]
    assert (
        "application/octet-stream"
        in paths["/shares/batch-get"]["post"]["responses"]["200"]["content"]
    )


def test_a_batch_cut_off_mid_body_stores_nothing(node: httpx.Client, tmp_path: Path) -> None:
    body = encode_frame([named(b"complete share" * 100), named(b"cut-off share" * 100)])
    port = int(str(node.base_url).rsplit(":", 1)[1].rstrip("/"))

    def wait_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)

    signed = SigningAuth().signer.header(
        "http://node", "PUT", "/shares", frame_index_digest(frame_index(body)), len(body),
        DEFAULT_CHAIN_ID,
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            b"PUT /shares HTTP/1.1\r\nHost: node\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in signed.items()).encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) - 500]
        )
        # The node has appended the first share (and part of the second) to a segment.
        written = len(body) - 500 - frame_size([0, 0])
        wait_until(lambda: packed_bytes(tmp_path) == written)
        assert packed_bytes(tmp_path) == written
    # It notices the disconnect and cuts them off again.
    wait_until(lambda: packed_bytes(tmp_path) == 0)
    assert packed_bytes(tmp_path) == 0
    assert stored(tmp_path) == set()
    assert node.get("/health").json()["shares"] == 0
