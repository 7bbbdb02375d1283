"""X25519 sealed boxes and the owner data-key wrap."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from datagora.crypto.aead import DataKey
from datagora.crypto.errors import CryptoError, DecryptionError
from datagora.crypto.sealed import (
    SEAL_OVERHEAD,
    WRAP_SCHEME,
    WrappedKey,
    open_sealed,
    public_key_bytes,
    public_key_from_bytes,
    seal,
    unwrap_data_key,
    wrap_data_key,
)

OWNER = X25519PrivateKey.generate()
DATASET = bytes(range(32))


@settings(max_examples=30, deadline=None)
@given(plaintext=st.binary(max_size=256), context=st.binary(max_size=64))
def test_seal_round_trip(plaintext: bytes, context: bytes) -> None:
    box = seal(OWNER.public_key(), plaintext, context)
    assert len(box) == len(plaintext) + SEAL_OVERHEAD
    assert open_sealed(OWNER, box, context) == plaintext


def test_boxes_are_randomised() -> None:
    assert seal(OWNER.public_key(), b"k", b"") != seal(OWNER.public_key(), b"k", b"")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_flipped_bit_is_detected(data: st.DataObject) -> None:
    box = bytearray(seal(OWNER.public_key(), b"a data key of 32 bytes, exactly", b"ctx"))
    bit = data.draw(st.integers(0, len(box) * 8 - 1))
    box[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        open_sealed(OWNER, bytes(box), b"ctx")


def test_wrong_recipient_context_or_length_fails() -> None:
    box = seal(OWNER.public_key(), b"x", b"ctx")
    with pytest.raises(DecryptionError):
        open_sealed(X25519PrivateKey.generate(), box, b"ctx")
    with pytest.raises(DecryptionError):
        open_sealed(OWNER, box, b"other")
    with pytest.raises(DecryptionError, match="at least"):
        open_sealed(OWNER, box[: SEAL_OVERHEAD - 1], b"ctx")


def test_low_order_public_key_is_refused() -> None:
    # The all-zero point gives an all-zero shared secret; cryptography refuses it.
    with pytest.raises(CryptoError):
        seal(public_key_from_bytes(bytes(32)), b"x", b"")


def test_wrap_round_trip_and_binding() -> None:
    key = DataKey.generate()
    wrapped = wrap_data_key(key, OWNER.public_key(), DATASET, 4)
    assert wrapped.scheme == WRAP_SCHEME
    assert wrapped.recipient == public_key_bytes(OWNER.public_key())
    assert key.raw() not in wrapped.sealed
    assert unwrap_data_key(wrapped, OWNER, DATASET, 4) == key
    with pytest.raises(DecryptionError):
        unwrap_data_key(wrapped, OWNER, DATASET, 5)
    with pytest.raises(DecryptionError):
        unwrap_data_key(wrapped, OWNER, bytes(32), 4)
    with pytest.raises(DecryptionError, match="different X25519 key"):
        unwrap_data_key(wrapped, X25519PrivateKey.generate(), DATASET, 4)


def test_wrapped_key_validates_its_fields() -> None:
    wrapped = wrap_data_key(DataKey.generate(), OWNER.public_key(), DATASET, 1)
    with pytest.raises(CryptoError, match="unknown key wrap scheme"):
        WrappedKey("umbral", wrapped.recipient, wrapped.sealed)
    with pytest.raises(CryptoError, match="recipient"):
        WrappedKey(WRAP_SCHEME, wrapped.recipient[:31], wrapped.sealed)
    with pytest.raises(CryptoError, match="sealed data key"):
        WrappedKey(WRAP_SCHEME, wrapped.recipient, wrapped.sealed + b"\x00")
    with pytest.raises(CryptoError, match="32 bytes"):
        public_key_from_bytes(b"\x01" * 31)
