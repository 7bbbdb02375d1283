"""The storage node under a real uvicorn server on a loopback port."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from storage_helpers import Encoded, ThreadNode

from datagora.storage.merkle import MerkleProof
from datagora.storage.packs import share_location, stored_names
from datagora.storage.placement import PlacementRecord
from datagora.storage.shares import SHARE_MAGIC, verify_share

CAP = 4096


@pytest.fixture
def node(tmp_path: Path) -> Iterator[httpx.Client]:
    with ThreadNode(tmp_path, CAP) as client:
        yield client


def name_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_files(data_dir: Path) -> set[str]:
    return stored_names(data_dir)


def packed_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "packs").glob("*.pack"))


def test_put_get_head_and_health(node: httpx.Client, tmp_path: Path) -> None:
    body = b"an encrypted share" * 10
    name = name_of(body)
    first = node.put(f"/shares/{name}", content=body)
    assert first.status_code == 201, first.text
    assert first.json() == {"name": name, "size": len(body), "stored": True}
    again = node.put(f"/shares/{name}", content=body)
    assert again.status_code == 200 and again.json()["stored"] is False
    got = node.get(f"/shares/{name}")
    assert got.status_code == 200 and got.content == body
    head = node.head(f"/shares/{name}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(body)) and head.content == b""
    health = node.get("/health").json()
    assert health["status"] == "ok"
    assert (health["shares"], health["bytes"], health["max_share_bytes"]) == (1, len(body), CAP)
    assert health["free_bytes"] > 0
    assert stored_files(tmp_path) == {name}
    assert [p.name for p in (tmp_path / "packs").iterdir()] == ["00000001.pack"]


def test_body_that_does_not_match_its_name_changes_nothing(
    node: httpx.Client, tmp_path: Path
) -> None:
    response = node.put(f"/shares/{name_of(b'other')}", content=b"body")
    assert response.status_code == 422
    assert "does not hash" in response.json()["detail"]
    assert stored_files(tmp_path) == set() and packed_bytes(tmp_path) == 0
    assert node.get("/health").json()["shares"] == 0


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "0" * 65])
def test_bad_names_are_refused(node: httpx.Client, bad: str) -> None:
    for response in (node.put(f"/shares/{bad}", content=b"x"), node.get(f"/shares/{bad}")):
        assert response.status_code == 400
        assert "64 lowercase hex" in response.json()["detail"]


def test_size_cap_with_and_without_content_length(node: httpx.Client, tmp_path: Path) -> None:
    big = SHARE_MAGIC + b"x" * (CAP + 1 - len(SHARE_MAGIC))
    declared = node.put(f"/shares/{name_of(big)}", content=big)
    assert declared.status_code == 413 and "cap of 4096" in declared.json()["detail"]

    def chunked() -> Iterator[bytes]:
        # A generator body is sent chunked, with no Content-Length to check up front.
        yield SHARE_MAGIC
        for _ in range(CAP // 512 + 1):
            yield b"y" * 512

    body = SHARE_MAGIC + b"y" * (CAP + 512)
    streamed = node.put(f"/shares/{name_of(body)}", content=chunked())
    assert streamed.status_code == 413
    assert stored_files(tmp_path) == set() and packed_bytes(tmp_path) == 0
    exact = SHARE_MAGIC + b"z" * (CAP - len(SHARE_MAGIC))
    assert node.put(f"/shares/{name_of(exact)}", content=exact).status_code == 201


def test_documents_up_to_the_manifest_limit_pass_the_share_cap(node: httpx.Client) -> None:
    """A manifest is stored as a blob: the share cap does not apply to it, the one
    manifest limit (storage/limits.py) does."""
    document = b"{" + b" " * (CAP * 2) + b"}"
    assert node.put(f"/shares/{name_of(document)}", content=document).status_code == 201


def test_missing_share_is_404(node: httpx.Client) -> None:
    response = node.get(f"/shares/{'0' * 64}")
    assert response.status_code == 404 and "no share" in response.json()["detail"]
    assert node.head(f"/shares/{'0' * 64}").status_code == 404


def test_interrupted_writes_are_never_served_and_are_cleaned(tmp_path: Path) -> None:
    body = b"complete share bytes"
    name = name_of(body)
    with ThreadNode(tmp_path, CAP) as client:
        assert client.put(f"/shares/{name}", content=body).status_code == 201
    # What a crash mid-batch leaves behind: bytes appended past the last indexed share.
    (segment,) = (tmp_path / "packs").glob("*.pack")
    with segment.open("ab") as handle:
        handle.write(b"half of an uncommitted share")
    # And of the old layout: a partial temp file.
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / f"{name_of(b'other')}.partial").write_bytes(b"oth")
    # A restart cuts both off, and finds the share and counts it.
    with ThreadNode(tmp_path, CAP) as client:
        assert segment.stat().st_size == len(body)
        assert not (tmp_path / "tmp").exists()
        assert client.get(f"/shares/{name_of(b'other')}").status_code == 404
        assert client.get(f"/shares/{name}").content == body
        assert client.get("/health").json()["shares"] == 1
        assert client.put(f"/shares/{name_of(b'more')}", content=b"more").status_code == 201
        assert client.get(f"/shares/{name}").content == body


def test_a_node_of_the_file_per_share_layout_imports_it(tmp_path: Path, sample: Encoded) -> None:
    manifest = sample.manifest.to_bytes()
    record = PlacementRecord.create(
        sample.verified, {sample.manifest.chunks[0].shares[0]: ["http://node-0"]}, 2
    ).to_bytes()
    for blob in (manifest, record, *sample.store.values()):
        name = name_of(blob)
        (tmp_path / "shares" / name[:2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "shares" / name[:2] / name).write_bytes(blob)
    marker = tmp_path / "placements" / name_of(manifest) / name_of(record)
    marker.parent.mkdir(parents=True)
    marker.write_text("2")
    with ThreadNode(tmp_path, CAP) as client:
        assert not (tmp_path / "shares").exists() and not (tmp_path / "placements").exists()
        for blob in (manifest, record, *sample.store.values()):
            assert client.get(f"/shares/{name_of(blob)}").content == blob
        assert client.get("/health").json()["shares"] == 2 + len(sample.store)
        listed = client.get(f"/placements?manifest={name_of(manifest)}").json()["records"]
        assert listed == [{"hash": name_of(record), "sequence": 2}]


def test_openapi_is_published(node: httpx.Client) -> None:
    paths = node.get("/openapi.json").json()["paths"]
    assert {"/shares/{name}", "/health", "/proofs/{name}", "/placements"} <= set(paths)


def put(node: httpx.Client, data: bytes, kind: str = "shares") -> httpx.Response:
    return node.put(f"/{kind}/{name_of(data)}", content=data)


def test_proofs_from_a_manifest_the_node_holds(node: httpx.Client, sample: Encoded) -> None:
    m = sample.manifest
    manifest_name = m.digest().hex()
    share_hash = m.chunks[2].shares[1]
    share = sample.store[share_hash]
    url = f"/proofs/{share_hash.hex()}?manifest={manifest_name}"
    missing_manifest = node.get(url)
    assert missing_manifest.status_code == 404 and "manifest" in missing_manifest.json()["detail"]
    assert put(node, m.to_bytes()).status_code == 201
    assert node.get(url).status_code == 404  # the share itself is not here yet
    assert put(node, share).status_code == 201
    body = node.get(url).json()
    assert base64.b64decode(body["share"]) == share and body["root"] == m.merkle_root.hex()
    proof = MerkleProof.from_json(body["proof"])
    verified = verify_share(share, share_hash, proof, m.merkle_root, len(m.chunks) * m.n)
    assert verified.header.chunk_index == 2 and verified.header.share_index == 1
    # A share of another manifest, and a blob that is no manifest, are refused.
    stranger = node.get(f"/proofs/{'ab' * 32}?manifest={manifest_name}")
    assert stranger.status_code == 422 and "not listed" in stranger.json()["detail"]
    not_manifest = node.get(f"/proofs/{share_hash.hex()}?manifest={share_hash.hex()}")
    assert not_manifest.status_code == 422 and "not a manifest" in not_manifest.json()["detail"]
    assert node.get(f"/proofs/{share_hash.hex()}").status_code == 422  # manifest= missing
    assert node.get(f"/proofs/{share_hash.hex()}?manifest=xyz").status_code == 400


def test_placement_records_are_parsed_and_indexed(
    node: httpx.Client, tmp_path: Path, sample: Encoded
) -> None:
    manifest_name = sample.manifest.digest().hex()
    records = [
        PlacementRecord.create(
            sample.verified, {sample.manifest.chunks[0].shares[0]: [f"http://node-{seq}"]}, seq
        )
        for seq in (0, 1, 2, 4)
    ]
    assert node.get(f"/placements?manifest={manifest_name}").json()["records"] == []
    # A node indexes a placement only for a manifest it holds and checks it against.
    early = put(node, records[0].to_bytes(), "placements")
    assert early.status_code == 422 and "store it before" in early.json()["detail"]
    assert put(node, sample.manifest.to_bytes()).status_code == 201
    for record in records[:3]:
        assert put(node, record.to_bytes(), "placements").status_code == 201
    skipped = put(node, records[3].to_bytes(), "placements")
    assert skipped.status_code == 409 and "next is 3" in skipped.json()["detail"]
    listed = node.get(f"/placements?manifest={manifest_name}").json()["records"]
    assert listed == [
        {"hash": records[i].digest().hex(), "sequence": records[i].sequence} for i in (2, 1, 0)
    ]
    # Stored like a share, so it is fetched by its hash.
    assert node.get(f"/shares/{listed[0]['hash']}").content == records[2].to_bytes()
    # Something that is not a placement record is refused and leaves nothing behind.
    before, packed = stored_files(tmp_path), packed_bytes(tmp_path)
    refused = put(node, b'{"not":"a placement"}', "placements")
    assert refused.status_code == 422 and "placement record" in refused.json()["detail"]
    assert stored_files(tmp_path) == before and packed_bytes(tmp_path) == packed


def test_a_rotted_copy_is_replaced_by_a_fresh_put(node: httpx.Client, tmp_path: Path) -> None:
    body = b"share bytes that will rot on disk"
    assert put(node, body).status_code == 201
    where = share_location(tmp_path, name_of(body))
    assert where is not None
    path, offset, _ = where
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"X")
    assert node.get(f"/shares/{name_of(body)}").content == b"X" + body[1:]
    again = put(node, body)
    assert again.status_code == 201 and again.json()["stored"] is True
    assert node.get(f"/shares/{name_of(body)}").content == body
    assert node.get("/health").json()["shares"] == 1
