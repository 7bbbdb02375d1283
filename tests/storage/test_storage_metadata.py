"""The metadata schema: validation errors, canonical form, the documented schema file."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from datagora.storage.errors import MetadataError
from datagora.storage.metadata import (
    build_metadata,
    json_schema,
    parse_metadata,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
GOOD = {
    "title": "t",
    "license": "CC0-1.0",
    "creator": "c",
    "services": [{"id": 0, "type": "download"}],
}


def test_schema_file_is_current() -> None:
    on_disk = json.loads((DOCS / "metadata.schema.json").read_text())
    assert on_disk == json_schema(), "regenerate docs/metadata.schema.json"


def test_documented_example_is_canonical() -> None:
    text = (DOCS / "formats.md").read_text()
    section = text[text.index("## Metadata") :]
    example = re.search(r"```json\n(.*?)\n```", section, flags=re.S)
    assert example is not None
    raw = example.group(1).encode()
    meta = parse_metadata(raw, hashlib.sha256(raw).digest())
    assert meta.title == "Breast cancer cohort"


@pytest.mark.parametrize(
    "change, where",
    [
        ({"title": ""}, "title"),
        ({"tags": ["Bad Tag"]}, "tags"),
        ({"tags": ["a", "a"]}, "tags"),
        ({"services": []}, "services"),
        ({"services": [{"id": 0, "type": "download"}, {"id": 0, "type": "compute"}]}, "services"),
        ({"services": [{"id": 0, "type": "download", "price": "-1"}]}, "services.0.price"),
        (
            {"services": [{"id": 0, "type": "download", "trusted_algorithms": ["ab" * 32]}]},
            "services.0",
        ),
        ({"columns": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]}, "columns"),
        (
            {"time_range": {"start": "2026-01-02T00:00:00", "end": "2026-01-01T00:00:00"}},
            "time_range",
        ),
        ({"mock": {"uri": "x", "sha256": "XYZ"}}, "mock.sha256"),
        ({"publisher_keys": {"umbral_public_key": "00", "verifying_key": "00"}}, "publisher_keys"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_metadata_names_the_field(change: dict[str, object], where: str) -> None:
    with pytest.raises(MetadataError, match=re.escape(f"metadata {where}")):
        build_metadata(GOOD | change)


def test_canonical_bytes_and_hash_checks() -> None:
    meta = build_metadata(GOOD)
    raw = meta.to_bytes()
    assert parse_metadata(raw, meta.digest()) == meta
    with pytest.raises(MetadataError, match="on-chain hash"):
        parse_metadata(raw, bytes(32))
    spaced = json.dumps(json.loads(raw), indent=1).encode()
    with pytest.raises(MetadataError, match="canonical"):
        parse_metadata(spaced)
    with pytest.raises(MetadataError, match="JSON"):
        parse_metadata(b"{not json")
    with pytest.raises(MetadataError, match="larger"):
        parse_metadata(b" " * (64 * 1024 + 1))
