"""Placement records: canonical form, strict parsing, and the fit to their manifest."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import Encoded, encode_bytes

from datagora.storage.errors import PlacementError
from datagora.storage.manifest import verify_manifest
from datagora.storage.placement import PlacementRecord, parse_placement, verify_placement


def spread(sample: Encoded) -> dict[bytes, list[str]]:
    return {
        h: [f"http://127.0.0.1:{9000 + j}"]
        for c in sample.manifest.chunks
        for j, h in enumerate(c.shares)
    }


def test_round_trip_and_hash(sample: Encoded) -> None:
    record = PlacementRecord.create(sample.verified, spread(sample), sequence=3)
    raw = record.to_bytes()
    assert record.digest() == hashlib.sha256(raw).digest()
    again = verify_placement(raw, record.digest(), sample.verified)
    assert again == record and again.sequence == 3
    assert again.where(sample.manifest.chunks[0].shares[2]) == ("http://127.0.0.1:9002",)
    assert again.where(bytes(32)) == ()
    obj = json.loads(raw)
    assert obj["format"] == "datagora.placement" and obj["format_version"] == 1
    assert obj["manifest_hash"] == sample.manifest.digest().hex()


def test_repair_changes_the_record_never_the_manifest(sample: Encoded) -> None:
    first = PlacementRecord.create(sample.verified, spread(sample))
    moved = spread(sample)
    moved[sample.manifest.chunks[0].shares[0]] = ["http://127.0.0.1:9999"]
    second = PlacementRecord.create(sample.verified, moved, sequence=1)
    assert second.digest() != first.digest()
    assert second.manifest_hash == first.manifest_hash == sample.manifest.digest()


def test_one_location_may_not_hold_two_shares_of_a_chunk(sample: Encoded) -> None:
    shares = sample.manifest.chunks[0].shares
    with pytest.raises(PlacementError, match="holds two shares of one chunk"):
        PlacementRecord.create(sample.verified, {shares[0]: ["a"], shares[1]: ["b", "a"]})
    with pytest.raises(PlacementError, match="distinct locations"):
        PlacementRecord.create(sample.verified, {shares[0]: ["a", "a"]})
    # Shares of different chunks may share a node.
    other = sample.manifest.chunks[1].shares[0]
    PlacementRecord.create(sample.verified, {shares[0]: ["a"], other: ["a"]})


def test_record_must_fit_its_manifest(sample: Encoded) -> None:
    record = PlacementRecord.create(sample.verified, spread(sample))
    other = encode_bytes(b"another dataset", chunk_size=8)
    with pytest.raises(PlacementError, match="another manifest"):
        record.check(other.verified)
    stray = PlacementRecord(
        record.dataset_id, record.version, record.manifest_hash, 0, {bytes(32): ("a",)}
    )
    with pytest.raises(PlacementError, match="not listed"):
        stray.check(sample.verified)
    wrong_version = PlacementRecord(
        record.dataset_id, record.version + 1, record.manifest_hash, 0, {}
    )
    with pytest.raises(PlacementError, match="another dataset version"):
        wrong_version.check(sample.verified)


def mutate(sample: Encoded, key: str, value: Any) -> bytes:
    obj = PlacementRecord.create(sample.verified, spread(sample)).to_json()
    if value is None:
        del obj[key]
    else:
        obj[key] = value
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format", "datagora.manifest", "format must be"),
        ("format_version", 3, "format_version 3 is not supported"),
        ("format_version", 2, "placement record is missing holders, nodes"),
        ("sequence", -1, "sequence must be an integer"),
        ("sequence", True, "sequence must be an integer"),
        ("manifest_hash", "00", "manifest_hash must be 32 bytes"),
        ("placement", [], "placement must be a JSON object"),
        ("placement", {"00" * 32: []}, "distinct locations"),
        ("placement", {"00" * 32: [""]}, "non-empty string"),
        ("placement", {"00" * 32: "a"}, "array of strings"),
        ("sequence", None, "missing sequence"),
        ("extra", 1, "unknown fields extra"),
    ],
)
def test_bad_records_give_clear_errors(sample: Encoded, key: str, value: Any, message: str) -> None:
    raw = mutate(sample, key, value)
    with pytest.raises(PlacementError, match=message):
        verify_placement(raw, hashlib.sha256(raw).digest(), sample.verified)


def test_hash_and_canonical_form_are_enforced(sample: Encoded) -> None:
    record = PlacementRecord.create(sample.verified, spread(sample))
    with pytest.raises(PlacementError, match="expected hash"):
        verify_placement(record.to_bytes(), bytes(32), sample.verified)
    pretty = json.dumps(record.to_json(), indent=1, sort_keys=True).encode()
    with pytest.raises(PlacementError, match="canonical"):
        parse_placement(pretty)
    for raw, message in [(b"\xff", "ASCII"), (b"{", "not valid JSON"), (b'{"a":1.5}', "1.5")]:
        with pytest.raises(PlacementError, match=message):
            parse_placement(raw)


def test_the_example_in_docs_formats_fits_the_example_manifest() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "formats.md").read_text()

    def example(title: str) -> tuple[bytes, bytes]:
        section = doc.split(title, 1)[1]
        stated = re.search(r"hash\s+`([0-9a-f]{64})`", section)
        body = re.search(r"```json\n(.*?)```", section, re.S)
        assert stated and body
        canonical = json.dumps(
            json.loads(body.group(1)), sort_keys=True, separators=(",", ":")
        ).encode()
        return canonical, bytes.fromhex(stated.group(1))

    manifest = verify_manifest(*example("### Manifest"))
    raw, digest = example("### Placement record")
    record = verify_placement(raw, digest, manifest)
    assert len(record.locations) == 6 and record.sequence == 0
