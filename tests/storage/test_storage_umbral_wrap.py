"""Manifests can carry the data key wrapped with Umbral (for sharing through proxies)."""

from __future__ import annotations

import io

import pytest

from datagora.crypto import pre
from datagora.crypto.aead import DataKey
from datagora.crypto.keys import Identity
from datagora.storage.errors import ManifestError
from datagora.storage.manifest import UMBRAL_WRAP_SCHEME, parse_manifest, verify_manifest
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream


def test_umbral_wrapped_manifest_round_trip() -> None:
    owner = Identity.generate()
    params = EncodingParams(bytes(range(32)), 3, chunk_size=64, k=2, n=3)
    key = DataKey.generate()
    builder = ManifestBuilder(params)
    for chunk in encode_stream(io.BytesIO(b"rows," * 100), params, key):
        builder.add(chunk)
    scope = b"test-scope"
    wrapped = pre.wrap_key(key.raw(), owner.delegating_public_key(scope), scope=scope)
    manifest = builder.build(wrapped)
    raw = manifest.to_bytes()
    assert UMBRAL_WRAP_SCHEME.encode() in raw
    assert key.raw().hex().encode() not in raw and key.raw() not in raw
    parsed = verify_manifest(raw, manifest.digest()).manifest
    assert parsed.wrapped_key == wrapped
    assert pre.unwrap_own(owner, parsed.wrapped_key) == key.raw()  # type: ignore[arg-type]
    # A damaged Umbral field is refused by the strict parser.
    broken = raw.replace(wrapped.capsule.hex().encode(), b"00" * len(wrapped.capsule))
    with pytest.raises(ManifestError):
        parse_manifest(broken)
