"""Manifest: canonical serialisation, hash stability and strict parsing."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import Encoded, encode_bytes

from datagora.storage.errors import IntegrityError, ManifestError
from datagora.storage.manifest import Manifest, parse_manifest, verify_manifest


def test_round_trip_and_hash_stability(sample: Encoded) -> None:
    m = sample.manifest
    raw = m.to_bytes()
    assert m.digest() == hashlib.sha256(raw).digest()
    again = verify_manifest(raw, m.digest()).manifest
    assert again == m
    assert again.to_bytes() == raw
    # Building the same manifest twice gives the same bytes.
    assert Manifest.create(
        dataset_id=m.dataset_id, version=m.version, plaintext_size=m.plaintext_size,
        chunk_size=m.chunk_size, k=m.k, n=m.n, chunks=m.chunks, wrapped_key=m.wrapped_key,
    ).to_bytes() == raw  # fmt: skip


def test_canonical_form(sample: Encoded) -> None:
    raw = sample.manifest.to_bytes()
    assert b" " not in raw and b"\n" not in raw
    obj = json.loads(raw)
    assert list(obj) == sorted(obj)
    assert obj["format"] == "datagora.manifest" and obj["format_version"] == 3


def test_key_never_in_the_clear(sample: Encoded) -> None:
    raw = sample.manifest.to_bytes()
    assert sample.key.raw().hex().encode() not in raw
    assert sample.key.raw() not in raw


def test_placement_is_not_part_of_the_manifest(sample: Encoded) -> None:
    assert "placement" not in sample.manifest.to_json()


def test_wrong_hash_is_refused(sample: Encoded) -> None:
    with pytest.raises(ManifestError, match="expected hash"):
        verify_manifest(sample.manifest.to_bytes(), bytes(32))


def mutate(sample: Encoded, change: Any) -> bytes:
    obj = sample.manifest.to_json()
    change(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _set(path: str, value: Any) -> Any:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            obj = obj[int(p)] if isinstance(obj, list) else obj[p]
        if isinstance(obj, list):
            obj[int(last)] = value
        else:
            obj[last] = value

    return change


def _delete(key: str) -> Any:
    return lambda obj: obj.pop(key)


def _delete_in(where: str, key: str) -> Any:
    return lambda obj: obj[where].pop(key)


BAD = [
    (_set("format", "other"), "format must be"),
    (_set("format_version", 1), "format_version 1 is not supported"),
    (_set("format_version", 5), "format_version 5 is not supported"),
    (_set("format_version", 4), "manifest is missing pages"),
    (_set("format_version", 2), "erasure.share_format must be"),
    (_delete_in("merkle", "block_size"), "merkle is missing block_size"),
    (_set("merkle.block_size", 4096), "merkle.block_size must be 1024"),
    (_set("format_version", True), "format_version True is not supported"),
    (_set("dataset_id", "ab"), "dataset_id must be 32 bytes"),
    (_set("dataset_id", "AB" * 32), "lowercase hex"),
    (_set("version", -1), "version must be an integer"),
    (_set("version", True), "version must be an integer"),
    (_set("version", "1"), "version must be an integer"),
    (_set("chunk_size", 0), "chunk_size must be an integer"),
    (_set("plaintext_size", 1), "make 1 chunks, but the manifest lists"),
    (_set("cipher.algorithm", "AES-128-GCM"), "cipher.algorithm must be"),
    (_set("erasure.codec", "rs"), "erasure.codec must be"),
    (_set("erasure.k", 0), "erasure.k must be an integer"),
    (_set("erasure.k", 6), "1 <= k <= n"),
    (_set("erasure.n", 4), "lists 5 shares, n is 4"),
    (_set("merkle.scheme", "sha3"), "merkle.scheme must be"),
    (_set("merkle.root", "00" * 32), "merkle root does not match"),
    (_set("chunks.0.ciphertext_size", 5), "chunk 0: ciphertext_size is 5"),
    (_set("chunks", {}), "chunks must be a JSON array"),
    (_set("key_wrap.scheme", "umbral"), "key_wrap.scheme must be"),
    (_set("key_wrap.sealed", "00"), "sealed data key is"),
    (_delete("key_wrap"), "manifest is missing key_wrap"),
    (_set("placement", {}), "unknown fields placement"),
    (_set("extra", 1), "unknown fields extra"),
    (_set("cipher.mode", "x"), "cipher has unknown fields mode"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_manifests_give_clear_errors(sample: Encoded, change: Any, message: str) -> None:
    raw = mutate(sample, change)
    with pytest.raises(ManifestError, match=message):
        verify_manifest(raw, hashlib.sha256(raw).digest())


def test_share_listed_twice(sample: Encoded) -> None:
    def dup(obj: dict[str, Any]) -> None:
        obj["chunks"][1]["shares"][0] = obj["chunks"][0]["shares"][0]

    with pytest.raises(ManifestError, match="listed twice"):
        parse_manifest(mutate(sample, dup))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff", "ASCII JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "manifest must be a JSON object"),
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
        (b'{"a":1.5}', "non-integer number 1.5"),
        (b'{"a":NaN}', "NaN is not allowed"),
    ],
)
def test_malformed_json(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def test_non_canonical_spelling_is_refused(sample: Encoded) -> None:
    pretty = json.dumps(sample.manifest.to_json(), indent=1, sort_keys=True).encode()
    with pytest.raises(ManifestError, match="canonical"):
        verify_manifest(pretty, hashlib.sha256(pretty).digest())


def test_verified_manifest_gives_proofs_for_every_share(sample: Encoded) -> None:
    from datagora.storage.merkle import verify_inclusion

    m = sample.manifest
    for h in m.share_hashes():
        assert verify_inclusion(h, sample.verified.proof(h), m.merkle_root)
    with pytest.raises(IntegrityError, match="not in this manifest"):
        sample.verified.proof(bytes(32))


def test_types_that_force_verification() -> None:
    from datagora.storage.manifest import VerifiedManifest
    from datagora.storage.shares import VerifiedShare

    encoded = encode_bytes(b"x")
    with pytest.raises(TypeError):
        VerifiedManifest(object(), encoded.manifest, encoded.manifest.digest())
    with pytest.raises(TypeError):
        VerifiedShare(object(), bytes(32), None, b"")  # type: ignore[arg-type]


def test_the_example_in_docs_formats_is_a_valid_manifest() -> None:
    # Keeps the documented example and its stated hash honest.
    doc = (Path(__file__).parents[2] / "docs" / "formats.md").read_text()
    section = doc.split("### Manifest", 1)[1]
    stated = re.search(r"hash `([0-9a-f]{64})`", section)
    example = re.search(r"```json\n(.*?)```", section, re.S)
    assert stated and example
    canonical = json.dumps(
        json.loads(example.group(1)), sort_keys=True, separators=(",", ":")
    ).encode()
    verified = verify_manifest(canonical, bytes.fromhex(stated.group(1)))
    assert verified.manifest.k == 2 and verified.manifest.plaintext_size == 17
