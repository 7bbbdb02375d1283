"""verify() against real storage node processes: honest copies pass, tampered ones are named."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from datagora.audit import Status, VerifyReport, report_to_json, verify
from datagora.catalog.resolver import datagora_uri
from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import wrap_data_key
from datagora.ledger import Ledger, PublishParams
from datagora.ports import free_port
from datagora.storage.auth import WriteSigner
from datagora.storage.blocks import content_address
from datagora.storage.manifest import Manifest
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream
from helpers import OWNER, h


@dataclass
class Node:
    url: str
    data: Path

    def put(self, blob: bytes) -> str:
        name = content_address(blob).hex()
        # Writes are signed by an account with a quota on the node (granted at launch).
        chain_id = httpx.get(f"{self.url}/health", timeout=10).json()["writes"]["chain_id"]
        path = f"/shares/{name}"
        header = WriteSigner(OWNER).header(
            self.url, "PUT", path, bytes.fromhex(name), len(blob), chain_id
        )
        r = httpx.put(f"{self.url}{path}", content=blob, headers=header, timeout=10)
        assert r.status_code in (200, 201), r.text
        return name

    def tamper(self, name: str, blob: bytes) -> None:
        """Put `blob` on disk under a name it does not hash to (as rot or an attacker would)."""
        # Append it to a segment of its own and point the node's index at it.
        storage = self.data / "storage"
        segment = storage / "packs" / "99999999.pack"
        with segment.open("ab") as handle:
            offset = handle.tell()
            handle.write(blob)
        with contextlib.closing(sqlite3.connect(storage / "index.sqlite3")) as index, index:
            index.execute(
                "INSERT OR REPLACE INTO shares (name, segment, offset, length, stored_at) "
                "VALUES (?, 99999999, ?, ?, 0)",
                (bytes.fromhex(name), offset, len(blob)),
            )


def _launch(data: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (data / "storage").mkdir(parents=True, exist_ok=True)
    grant = ["node", "quota", "grant", OWNER.address, "1GiB", "--data", str(data)]
    subprocess.run([sys.executable, "-m", "datagora", *grant], check=True, capture_output=True)
    command = ["node", "--roles", "storage", "--port", str(port), "--data", str(data)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "datagora", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def _ready(proc: subprocess.Popen[bytes], port: int, data: Path) -> Node:
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the storage node exited at start"
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return Node(url, data)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the storage node did not answer")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    dirs = [tmp_path_factory.mktemp(f"node{i}") for i in range(2)]
    started = [_launch(d) for d in dirs]  # both start at once
    try:
        good, bad = (_ready(proc, port, d) for (proc, port), d in zip(started, dirs, strict=True))
        yield good, bad
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(timeout=10)


@dataclass
class Stored:
    dataset: int
    metadata: bytes
    manifest: Manifest
    shares: dict[bytes, bytes]


def store_dataset(
    ledger: Ledger, node: Node, seed: str, *, root: bytes | None = None, uri: str | None = None
) -> Stored:
    """Encode a small dataset, put everything on `node`, publish its hashes."""
    dataset_id = h(seed)
    params = EncodingParams(dataset_id, 1, chunk_size=64, k=2, n=4)
    key = DataKey.generate()
    builder = ManifestBuilder(params)
    shares: dict[bytes, bytes] = {}
    for chunk in encode_stream(io.BytesIO(seed.encode() * 8), params, key):
        builder.add(chunk)
        shares.update({s.sha256: s.data for s in chunk.shares})
    owner_key = X25519PrivateKey.generate().public_key()
    manifest = builder.build(wrap_data_key(key, owner_key, dataset_id, 1))
    metadata = json.dumps({"title": seed}).encode()
    for blob in [metadata, manifest.to_bytes(), *shares.values()]:
        node.put(blob)
    published = ledger.factory.publish(
        OWNER,
        PublishParams(
            metadata_hash=hashlib.sha256(metadata).digest(),
            metadata_uri=uri
            if uri is not None
            else datagora_uri(hashlib.sha256(metadata).digest()),
            manifest_hash=manifest.digest(),
            merkle_root=manifest.merkle_root if root is None else root,
        ),
    )
    return Stored(published.dataset, metadata, manifest, shares)


def statuses(report: VerifyReport, subject: str) -> list[Status]:
    return [c.status for c in report.checks if c.subject.startswith(subject)]


def test_honest_copies_verify(embedded_ledger: Ledger, nodes: tuple[Node, Node]) -> None:
    good, _ = nodes
    stored = store_dataset(embedded_ledger, good, "honest")
    report = verify(embedded_ledger, stored.dataset, [good.url], sample=100)
    assert report.ok and report.complete, report_to_json(report)
    assert statuses(report, "metadata") == [Status.OK]
    assert statuses(report, "manifest") == [Status.OK]
    assert statuses(report, "root") == [Status.OK]
    assert statuses(report, "share") == [Status.OK] * len(stored.shares)
    assert json.loads(report_to_json(report))["ok"] is True


def test_tampered_metadata_is_a_mismatch(embedded_ledger: Ledger, nodes: tuple[Node, Node]) -> None:
    good, bad = nodes
    stored = store_dataset(embedded_ledger, good, "metadata tamper")
    name = hashlib.sha256(stored.metadata).hexdigest()
    bad.tamper(name, stored.metadata.replace(b"tamper", b"TAMPER"))
    report = verify(embedded_ledger, stored.dataset, [good.url, bad.url], sample=2)
    assert not report.ok
    (mismatch,) = report.mismatches
    assert mismatch.subject == "metadata" and mismatch.source.startswith(bad.url)
    assert "not the on-chain value" in mismatch.reason
    # The good copy is still reported as good.
    assert Status.OK in statuses(report, "metadata")
    assert json.loads(report_to_json(report))["mismatches"] == 1


def test_tampered_manifest_and_share_are_mismatches(
    embedded_ledger: Ledger, nodes: tuple[Node, Node]
) -> None:
    _, bad = nodes
    stored = store_dataset(embedded_ledger, bad, "manifest tamper")
    bad.tamper(stored.manifest.digest().hex(), stored.manifest.to_bytes() + b" ")
    report = verify(embedded_ledger, stored.dataset, [bad.url])
    assert not report.ok
    assert statuses(report, "manifest") == [Status.MISMATCH]
    assert statuses(report, "share") == []  # no trustworthy manifest, no share list

    stored = store_dataset(embedded_ledger, bad, "share tamper")
    victim = next(iter(stored.shares))
    flipped = bytearray(stored.shares[victim])
    flipped[-1] ^= 1
    bad.tamper(victim.hex(), bytes(flipped))
    report = verify(embedded_ledger, stored.dataset, [bad.url], sample=len(stored.shares))
    (mismatch,) = report.mismatches
    assert mismatch.subject == f"share {victim.hex()}"
    assert "does not match" in mismatch.reason
    assert statuses(report, "manifest") == [Status.OK]


def test_root_differing_from_the_manifest_is_a_mismatch(
    embedded_ledger: Ledger, nodes: tuple[Node, Node]
) -> None:
    good, _ = nodes
    stored = store_dataset(embedded_ledger, good, "root", root=h("another root"))
    report = verify(embedded_ledger, stored.dataset, [good.url])
    assert statuses(report, "root") == [Status.MISMATCH]
    # Shares are checked against the chain's root, so none can pass.
    assert set(statuses(report, "share")) == {Status.MISMATCH}
    assert not report.ok


def test_unavailable_is_not_a_mismatch(embedded_ledger: Ledger, nodes: tuple[Node, Node]) -> None:
    good, bad = nodes
    stored = store_dataset(embedded_ledger, good, "elsewhere", uri="http://127.0.0.1:9/meta")
    report = verify(embedded_ledger, stored.dataset, [bad.url])
    assert report.ok and not report.complete
    assert statuses(report, "metadata") == [Status.UNAVAILABLE]
    assert statuses(report, "manifest") == [Status.UNAVAILABLE]
    assert "HTTP 404" in report.unavailable[0].reason
    assert "ConnectError" in report.unavailable[0].reason  # the dead http URI
