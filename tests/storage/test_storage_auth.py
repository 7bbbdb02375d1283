"""Storage nodes refuse what nobody pays for: each attack of issue 16, tried for real.

The attackers: an anonymous client filling a node; an account forging, replaying or
redirecting a signed write; an account without a quota, or beyond it; anyone
writing a placement record at sequence 2**63-1, or pinning junk with one, or
pointing repair at their own URLs; and the manifest limit that differed between
the uploader (64 MiB) and the retention sweep (16 MiB). Each is refused with a
reason, and nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from storage_helpers import WRITER, Encoded, SigningAuth, ThreadNode, encode_bytes, grant

from datagora.crypto.aead import DataKey
from datagora.crypto.nonces import MemoryNonceStore
from datagora.crypto.sealed import wrap_data_key
from datagora.ledger import Ledger, dev_account
from datagora.storage.auth import (
    AUTH_HEADER,
    DEFAULT_CHAIN_ID,
    QuotaBook,
    WritePolicy,
    WriteSigner,
)
from datagora.storage.batch import encode_frame
from datagora.storage.client import StorageClient
from datagora.storage.controllers import LedgerControllers
from datagora.storage.errors import UploadError
from datagora.storage.limits import DatasetTooLarge, manifest_bound, max_dataset_bytes
from datagora.storage.manifest import MAX_MANIFEST_BYTES, ChunkRecord, Manifest
from datagora.storage.packs import PackStore, stored_names
from datagora.storage.pipeline import EncodingParams, new_dataset_id
from datagora.storage.placement import MAX_SEQUENCE, PlacementRecord
from datagora.storage.repair import Repairer
from datagora.storage.retention import Retention
from helpers import publish

ATTACKER = dev_account(4)  # given a small quota where a test needs one
STRANGER = dev_account(5)  # never given a quota
OWNER_KEY = X25519PrivateKey.generate()


def name_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def policy(data_dir: Path, **options: object) -> WritePolicy:
    return WritePolicy(QuotaBook.in_dir(data_dir), MemoryNonceStore(), **options)  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ThreadNode]:
    running = ThreadNode(tmp_path / "node", cap=1 << 20)
    running.start()
    yield running
    running.stop()


def signed(account: object, node: str, path: str, content: bytes, size: int) -> dict[str, str]:
    return WriteSigner(account).header(  # type: ignore[arg-type]
        node, "PUT", path, content, size, DEFAULT_CHAIN_ID
    )


def share_bytes(seed: bytes, size: int = 2000) -> bytes:
    return b"DGS1" + (seed * size)[:size]


def test_anonymous_writes_are_refused_and_store_nothing(node: ThreadNode, sample: Encoded) -> None:
    blob = share_bytes(b"junk")
    record = PlacementRecord.create(
        sample.verified, {sample.manifest.chunks[0].shares[0]: [node.url]}, MAX_SEQUENCE
    )
    with httpx.Client(base_url=node.url, timeout=10) as anonymous:
        answers = [
            anonymous.put(f"/shares/{name_of(blob)}", content=blob),
            anonymous.put("/shares", content=encode_frame([(bytes.fromhex(name_of(blob)), blob)])),
            anonymous.put(f"/placements/{record.digest().hex()}", content=record.to_bytes()),
            anonymous.put(
                f"/shares/{sample.manifest.digest().hex()}", content=sample.manifest.to_bytes()
            ),
        ]  # fmt: skip
        for answer in answers:
            assert answer.status_code == 401
            assert AUTH_HEADER in answer.json()["detail"]
        assert stored_names(node.data_dir) == set()
        # Reads stay open.
        assert anonymous.get("/health").json()["writes"]["chain_id"] == DEFAULT_CHAIN_ID
        assert anonymous.get(f"/shares/{name_of(blob)}").status_code == 404


def test_forged_replayed_and_misdirected_writes_are_refused(node: ThreadNode) -> None:
    blob = share_bytes(b"mine")
    name = name_of(blob)
    path = f"/shares/{name}"
    content = bytes.fromhex(name)
    with httpx.Client(base_url=node.url, timeout=10) as client:

        def put(headers: dict[str, str], to: str = path, body: bytes = blob) -> httpx.Response:
            return client.put(to, content=body, headers=headers)

        elsewhere = put(signed(WRITER, "http://127.0.0.1:1", path, content, len(blob)))
        assert elsewhere.status_code == 401 and "for node" in elsewhere.json()["detail"]
        other_path = put(signed(WRITER, node.url, f"/placements/{name}", content, len(blob)))
        assert other_path.status_code == 401 and "signed for PUT" in other_path.json()["detail"]
        header = signed(WRITER, node.url, path, content, len(blob))
        raw = bytearray(base64.b64decode(header[AUTH_HEADER]))
        forged = json.loads(raw)
        forged["message"]["writer"] = ATTACKER.address  # claims another account
        tampered = {AUTH_HEADER: base64.b64encode(json.dumps(forged).encode()).decode()}
        assert put(tampered).status_code == 401
        other = share_bytes(b"other")
        swapped = put(header, f"/shares/{name_of(other)}", other)  # the header of another body
        assert swapped.status_code == 401
        assert stored_names(node.data_dir) == set()
        expired = WriteSigner(WRITER, lifetime=-5).header(
            node.url, "PUT", path, content, len(blob), DEFAULT_CHAIN_ID
        )
        assert put(expired).status_code == 401 and "expired" in put(expired).json()["detail"]
        fresh = signed(WRITER, node.url, path, content, len(blob))
        assert put(fresh).status_code == 201
        replayed = put(fresh)
        assert replayed.status_code == 401 and "replayed" in replayed.json()["detail"]
    assert stored_names(node.data_dir) == {name}


def test_no_quota_is_403_beyond_quota_is_413_and_nothing_is_stored(tmp_path: Path) -> None:
    node = ThreadNode(tmp_path / "node", cap=1 << 20)
    grant(node.data_dir, ATTACKER.address, 10_000)
    node.start()
    try:
        blobs = [share_bytes(bytes([i]) * 7, 4000) for i in range(3)]
        with httpx.Client(base_url=node.url, timeout=10) as client:

            def put(account: object, blob: bytes) -> httpx.Response:
                path = f"/shares/{name_of(blob)}"
                headers = signed(account, node.url, path, bytes.fromhex(name_of(blob)), len(blob))
                return client.put(path, content=blob, headers=headers)

            stranger = put(STRANGER, blobs[0])
            assert stranger.status_code == 403 and "no storage quota" in stranger.json()["detail"]
            assert put(ATTACKER, blobs[0]).status_code == 201
            assert put(ATTACKER, blobs[1]).status_code == 201
            again = put(ATTACKER, blobs[1])  # already held: costs nothing more
            assert again.status_code == 200
            over = put(ATTACKER, blobs[2])
            assert over.status_code == 413 and "exceed its quota" in over.json()["detail"]
        assert name_of(blobs[2]) not in stored_names(node.data_dir)
        assert name_of(blobs[0]) in stored_names(node.data_dir)
    finally:
        node.stop()
    book = QuotaBook.in_dir(node.data_dir)
    used = {e.account: (e.granted, e.used) for e in book.entries()}
    book.close()
    assert used[ATTACKER.address] == (10_000, 8_008)


def test_a_quota_source_grants_what_the_operator_did_not(tmp_path: Path) -> None:
    """The hook for paid storage deals: a source's grant adds to the operator's."""

    class Deals:
        def granted(self, account: str) -> int:
            return 5_000 if account == STRANGER.address else 0

    data = tmp_path / "node"
    node = ThreadNode(
        data, cap=1 << 20, policy=WritePolicy(QuotaBook.in_dir(data, [Deals()]), MemoryNonceStore())
    )
    node.start()
    try:
        answers = []
        for seed in (b"paid", b"more"):
            blob = share_bytes(seed, 4000)
            path = f"/shares/{name_of(blob)}"
            headers = signed(STRANGER, node.url, path, bytes.fromhex(name_of(blob)), len(blob))
            answers.append(httpx.put(f"{node.url}{path}", content=blob, headers=headers))
        assert [a.status_code for a in answers] == [201, 413]
    finally:
        node.stop()


def test_an_upload_beyond_the_quota_fails_and_leaves_at_most_the_quota(tmp_path: Path) -> None:
    """'Anyone can upload without limit': an account uploads 300 kB with a 40 kB quota."""
    nodes = [ThreadNode(tmp_path / f"n{i}", cap=1 << 20) for i in range(3)]
    for n in nodes:
        grant(n.data_dir, ATTACKER.address, 40_000)
        n.start()
    try:
        client = StorageClient([n.url for n in nodes], signer=ATTACKER)
        params = EncodingParams(new_dataset_id(), 1, chunk_size=4096, k=2, n=3)
        with pytest.raises(UploadError, match="quota"):
            client.upload(io.BytesIO(os.urandom(300_000)), params, DataKey.generate(),
                          OWNER_KEY.public_key())  # fmt: skip
    finally:
        for n in nodes:
            n.stop()
    for n in nodes:
        book = QuotaBook.in_dir(n.data_dir)
        assert book.used(ATTACKER.address) <= 40_000
        book.close()


def _upload(urls: list[str], size: int = 40_000) -> tuple[bytes, Encoded | None]:
    alone = len(urls) == 1  # one node: 1-of-2 shares, both on it
    client = StorageClient(urls, signer=WRITER, happy=1 if alone else None)
    k, n = (1, 2) if alone else (2, 3)
    params = EncodingParams(new_dataset_id(), 1, chunk_size=4096, k=k, n=n)
    result = client.upload(io.BytesIO(os.urandom(size)), params, DataKey.generate(),
                           OWNER_KEY.public_key())  # fmt: skip
    return result.manifest_hash, None


def test_a_placement_at_sequence_2_63_minus_1_is_refused_and_repair_still_works(
    tmp_path: Path,
) -> None:
    nodes = [ThreadNode(tmp_path / f"n{i}", cap=1 << 20) for i in range(4)]
    for n in nodes:
        grant(n.data_dir, ATTACKER.address, 1 << 20)
        n.start()
    try:
        urls = [n.url for n in nodes]
        manifest_hash, _ = _upload(urls[:3])
        verified = StorageClient(urls).fetch_manifest(manifest_hash)
        share = verified.manifest.chunks[0].shares[0]
        for account, status in ((None, 401), (ATTACKER, 409)):
            record = PlacementRecord.create(verified, {share: [urls[0]]}, MAX_SEQUENCE)
            path = f"/placements/{record.digest().hex()}"
            raw = record.to_bytes()
            headers = (
                {} if account is None else signed(account, urls[0], path, record.digest(), len(raw))
            )
            answer = httpx.put(f"{urls[0]}{path}", content=raw, headers=headers)
            assert answer.status_code == status, answer.text
            if account is not None:
                assert "is not the next one" in answer.json()["detail"]
        listed = httpx.get(f"{urls[0]}/placements?manifest={manifest_hash.hex()}").json()
        assert [r["sequence"] for r in listed["records"]] == [0]
        # A node is lost; repair writes the next sequence, 1.
        nodes[1].stop()
        report = Repairer(urls, timeout=5, signer=WRITER).repair(manifest_hash)
        assert report.healthy and report.rebuilt > 0
        assert report.placement is not None and report.placement.sequence == 1
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture
def ledger_node(tmp_path: Path, embedded_ledger: Ledger) -> Iterator[tuple[ThreadNode, list[str]]]:
    """A node that reads the ledger (placement records from controllers only) and knows
    the storage nodes placement records may name."""
    known: list[str] = []
    data = tmp_path / "node"
    running = ThreadNode(
        data,
        cap=1 << 20,
        policy=policy(
            data, known_nodes=lambda: known, controllers=LedgerControllers(embedded_ledger)
        ),
    )
    grant(data, ATTACKER.address, 1 << 20)
    running.start()
    known.append(running.url)
    yield running, known
    running.stop()


def test_junk_pinned_by_a_placement_is_refused(
    ledger_node: tuple[ThreadNode, list[str]], embedded_ledger: Ledger
) -> None:
    """Retention keeps placement records of recorded manifests: a stranger's record for
    someone's published dataset would pin junk forever. Only the controller places."""
    node, _ = ledger_node
    manifest_hash, _ = _upload([node.url])
    verified = StorageClient([node.url]).fetch_manifest(manifest_hash)
    publish(embedded_ledger, manifest_hash=manifest_hash, merkle_root=verified.manifest.merkle_root)
    share = verified.manifest.chunks[0].shares[0]

    def put(account: object, record: PlacementRecord) -> httpx.Response:
        path = f"/placements/{record.digest().hex()}"
        raw = record.to_bytes()
        return httpx.put(
            f"{node.url}{path}", content=raw,
            headers=signed(account, node.url, path, record.digest(), len(raw)),
        )  # fmt: skip

    junk = PlacementRecord.create(verified, {share: [node.url]}, 1)
    stranger = put(ATTACKER, junk)
    assert stranger.status_code == 403 and "does not control" in stranger.json()["detail"]
    elsewhere = PlacementRecord.create(verified, {share: ["http://attacker.example"]}, 1)
    unknown = put(WRITER, elsewhere)
    assert unknown.status_code == 422 and "not known storage nodes" in unknown.json()["detail"]
    assert junk.digest().hex() not in stored_names(node.data_dir)
    assert elsewhere.digest().hex() not in stored_names(node.data_dir)
    # The controller (the data NFT's holder) places it.
    assert put(WRITER, junk).status_code == 201


def test_repair_never_sends_requests_to_urls_a_record_lists(tmp_path: Path) -> None:
    hits: list[str] = []

    class Trap(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_POST = do_PUT = do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    trap = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trap)
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    trap_url = f"http://127.0.0.1:{trap.server_address[1]}"
    nodes = [ThreadNode(tmp_path / f"n{i}", cap=1 << 20) for i in range(3)]
    for n in nodes:
        n.start()
    try:
        urls = [n.url for n in nodes]
        manifest_hash, _ = _upload(urls)
        verified = StorageClient(urls).fetch_manifest(manifest_hash)
        # A record (accepted by nodes that filter nothing) places a share on the trap.
        share = verified.manifest.chunks[0].shares[0]
        record = PlacementRecord.create(verified, {share: [trap_url]}, 1)
        for url in urls:
            path = f"/placements/{record.digest().hex()}"
            raw = record.to_bytes()
            headers = signed(WRITER, url, path, record.digest(), len(raw))
            assert httpx.put(f"{url}{path}", content=raw, headers=headers).status_code == 201
        report = Repairer(urls, timeout=5, signer=WRITER).repair(manifest_hash)
        assert report.healthy
        assert any(p.reason == "not a known node" and p.node == trap_url for p in report.problems)
        assert hits == []
    finally:
        trap.shutdown()
        for n in nodes:
            n.stop()


class _Recorded:
    """The chain's references, as the sweep reads them: these manifests are recorded."""

    def __init__(self, manifests: set[bytes]) -> None:
        self.manifests = manifests
        self.documents: set[bytes] = set()

    def refresh(self) -> int:
        return 1


def test_retention_keeps_a_recorded_manifest_over_16_mib(tmp_path: Path) -> None:
    """The sweep skipped manifests over 16 MiB while nodes took 64 MiB ones, so it
    deleted the shares of every large recorded dataset."""
    n, chunk_size = 3, 1
    per_chunk = len(json.dumps({"ciphertext_size": 17, "shares": ["0" * 64] * n}))
    chunks = (17 << 20) // per_chunk + 1
    held = [os.urandom(40) for _ in range(n)]
    hashes = [hashlib.sha256(b).digest() for b in held]
    records = [
        ChunkRecord(chunk_size + 16, tuple(hashes) if i == 0 else
                    tuple(hashlib.sha256(b"%d-%d" % (i, j)).digest() for j in range(n)))
        for i in range(chunks)
    ]  # fmt: skip
    dataset = new_dataset_id()
    manifest = Manifest.create(
        dataset_id=dataset, version=1, plaintext_size=chunks * chunk_size, chunk_size=chunk_size,
        k=2, n=n, chunks=records,
        wrapped_key=wrap_data_key(DataKey.generate(), OWNER_KEY.public_key(), dataset, 1),
    )  # fmt: skip
    raw = manifest.to_bytes()
    assert 16 << 20 < len(raw) <= MAX_MANIFEST_BYTES
    store = PackStore(tmp_path / "store")
    try:
        for name, data in [(manifest.digest(), raw), *zip(hashes, held, strict=True)]:
            with store.writer() as batch:
                batch.start(name, store.holding(name))
                batch.write(data)
                assert batch.finish()
                batch.commit()
        retention = Retention(_Recorded({manifest.digest()}), grace=0)  # type: ignore[arg-type]
        report = retention.sweep(store)
        assert report.deleted == 0 and report.kept == n + 1
    finally:
        store.close()


def test_a_dataset_too_large_for_its_manifest_is_refused_before_any_share(
    node: ThreadNode, tmp_path: Path
) -> None:
    chunk_size, k, n = 4096, 2, 3
    # Small manifest pages (2 share addresses, 2 per index page) keep the file small.
    most = max_dataset_bytes(chunk_size, n, 2, 2)
    big = tmp_path / "sparse.bin"
    with big.open("wb") as f:
        f.truncate(most + chunk_size)  # sparse: no disk used
    client = StorageClient([node.url], signer=WRITER)
    params = EncodingParams(
        new_dataset_id(), 1, chunk_size=chunk_size, k=k, n=n, leaves_per_page=2, fanout=2
    )
    with pytest.raises(DatasetTooLarge) as refused:
        client.upload(big, params, DataKey.generate(), OWNER_KEY.public_key())
    message = str(refused.value)
    assert f"at most {most} bytes" in message and "chunk size 4096" in message
    assert "Nothing was uploaded" in message
    assert stored_names(node.data_dir) == set()


def test_the_manifest_bound_bounds_real_manifests() -> None:
    for size, chunk, n in ((0, 64, 3), (5_000, 64, 5), (20_000, 1000, 6)):
        encoded = encode_bytes(os.urandom(size), chunk_size=chunk, k=2, n=n)
        actual = len(encoded.manifest.to_bytes())
        assert actual <= manifest_bound(size, chunk, n) <= actual + 16 * 1024
    # A single-document manifest holds at most one leaf page's share addresses
    # (larger datasets are paged): a few MiB, far below the one limit.
    per_page = EncodingParams(new_dataset_id(), 1).leaves_per_page
    assert manifest_bound(per_page // 6 * (1 << 20), 1 << 20, 6) < 4 << 20 < MAX_MANIFEST_BYTES


def test_node_quota_grant_and_list(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "datagora", "node", "quota", *args, "--data", str(tmp_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    missing = run("list")
    assert missing.returncode == 1 and "holds no storage node" in missing.stderr
    (tmp_path / "storage").mkdir()
    granted = run("grant", ATTACKER.address, "10MiB", "--json")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["granted"] == 10 << 20
    listed = run("list", "--json")
    assert json.loads(listed.stdout)["quotas"] == [
        {"account": ATTACKER.address, "granted": 10 << 20, "used": 0}
    ]
    bad = run("grant", "0x12", "1")
    assert bad.returncode == 1 and "not an Ethereum account" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_signing_auth_helper_matches_the_client() -> None:
    """The tests' httpx signer signs what the storage client signs (a single blob by
    its name)."""
    assert SigningAuth().signer.address == WRITER.address


def test_released_blobs_give_their_quota_back_once(tmp_path: Path) -> None:
    from datagora.storage.auth import QuotaBook

    book = QuotaBook.in_dir(tmp_path)
    try:
        a, b = dev_account(1).address, dev_account(2).address
        book.grant(a, 1000)
        book.grant(b, 1000)
        book.reserve(a, 300)
        book.settle(a, 300, 300, [(b"\x01" * 32, 100), (b"\x02" * 32, 200)])
        book.reserve(b, 50)
        book.settle(b, 50, 50, [(b"\x03" * 32, 50)])
        assert (book.used(a), book.used(b)) == (300, 50)
        # A sweep deleted one of a's blobs, an unknown one and b's: each is given back.
        assert book.release([b"\x02" * 32, b"\x09" * 32, b"\x03" * 32]) == 250
        assert (book.used(a), book.used(b)) == (100, 0)
        assert book.release([b"\x02" * 32]) == 0  # never twice
        assert book.used(a) == 100
    finally:
        book.close()


@pytest.mark.parametrize(("chunk_size", "n"), [(4096, 3), (1 << 20, 6), (8 << 20, 6)])
def test_the_largest_dataset_fits_and_one_chunk_more_is_refused(chunk_size: int, n: int) -> None:
    from datagora.storage.limits import check_dataset_size, tree_sizes

    most = max_dataset_bytes(chunk_size, n)
    check_dataset_size(most, chunk_size, 2, n)  # just under: accepted
    sizes = tree_sizes(most, chunk_size, n)
    assert max(sizes.manifest_bytes, sizes.largest_page_bytes) <= MAX_MANIFEST_BYTES
    assert sizes.placement_bytes <= MAX_MANIFEST_BYTES
    with pytest.raises(DatasetTooLarge, match=f"at most {most} bytes"):
        check_dataset_size(most + 1, chunk_size, 2, n)  # one more chunk: refused


def test_a_tebibyte_fits_at_the_default_chunk_size() -> None:
    # Issue 16 part 5: >= 1 TiB at the default chunk size (1 MiB), with the manifest
    # split into a hash tree of pages (tests/storage/test_storage_pages.py).
    assert max_dataset_bytes(1 << 20, 6) > 1 << 40
