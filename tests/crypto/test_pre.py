"""Threshold proxy re-encryption of data keys: the whole flow, and every refusal."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datagora.crypto.errors import (
    BadFragment,
    MalformedWrappedKey,
    NotEnoughFragments,
    PreError,
    UnwrapFailed,
    WrongKey,
)
from datagora.crypto.keys import Identity
from datagora.crypto.pre import (
    VerifiedCapsuleFrag,
    WrappedKey,
    dataset_scope,
    make_kfrags,
    reencrypt,
    unwrap_own,
    unwrap_reencrypted,
    verify_cfrag,
    verify_kfrag,
    wrap_key,
)

OWNER = Identity.generate()
CONSUMER = Identity.generate()
STRANGER = Identity.generate()
SCOPE = dataset_scope(42, 3)


def wrapped_for(owner: Identity = OWNER, scope: bytes = SCOPE) -> tuple[bytes, WrappedKey]:
    data_key = os.urandom(32)
    return data_key, wrap_key(data_key, owner.delegating_public_key(scope), scope=scope)


def cfrags_for(
    wrapped: WrappedKey, kfrags: list[bytes], owner: Identity = OWNER
) -> list[VerifiedCapsuleFrag]:
    """What t proxies and the consumer do: verify kfrags, re-encrypt, verify cfrags."""
    out = []
    for kfrag in kfrags:
        verified = verify_kfrag(
            kfrag, owner.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key
        )
        cfrag = reencrypt(verified, wrapped.capsule)
        out.append(
            verify_cfrag(
                cfrag,
                wrapped.capsule,
                owner.verifying_key,
                wrapped.delegating_key,
                CONSUMER.umbral_public_key,
            )
        )
    return out


def test_two_of_three_end_to_end() -> None:
    data_key, wrapped = wrapped_for()
    assert unwrap_own(OWNER, wrapped) == data_key
    kfrags = make_kfrags(OWNER, CONSUMER.umbral_public_key, 2, 3, scope=SCOPE)
    assert len(kfrags) == 3 and len(set(kfrags)) == 3
    # Any two of the three proxies are enough.
    for pair in ([0, 1], [1, 2], [0, 2]):
        cfrags = cfrags_for(wrapped, [kfrags[i] for i in pair])
        opened = unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, cfrags, threshold=2)
        assert opened == data_key
    all_three = cfrags_for(wrapped, kfrags)
    assert unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, all_three) == data_key


@settings(max_examples=15, deadline=None)
@given(
    data_key=st.binary(min_size=32, max_size=32),
    shape=st.integers(1, 5).flatmap(lambda m: st.tuples(st.integers(1, m), st.just(m))),
    dataset=st.integers(0, 2**256 - 1),
    version=st.integers(0, 2**32 - 1),
)
def test_any_threshold_of_fragments_opens_the_key(
    data_key: bytes, shape: tuple[int, int], dataset: int, version: int
) -> None:
    threshold, shares = shape
    scope = dataset_scope(dataset, version)
    wrapped = wrap_key(data_key, OWNER.delegating_public_key(scope), scope=scope)
    kfrags = make_kfrags(OWNER, CONSUMER.umbral_public_key, threshold, shares, scope=scope)
    cfrags = cfrags_for(wrapped, kfrags[shares - threshold :])
    key = unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, cfrags)
    assert key == data_key


def test_fewer_than_threshold_is_refused() -> None:
    _, wrapped = wrapped_for()
    kfrags = make_kfrags(OWNER, CONSUMER.umbral_public_key, 2, 3, scope=SCOPE)
    one = cfrags_for(wrapped, kfrags[:1])
    with pytest.raises(NotEnoughFragments, match="2 are needed"):
        unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, one, threshold=2)
    # Without the threshold up front, umbral's refusal is reported the same way.
    with pytest.raises(NotEnoughFragments):
        unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, one)
    # The same fragment twice still counts once.
    with pytest.raises(NotEnoughFragments):
        unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, one + one, threshold=2)
    with pytest.raises(NotEnoughFragments):
        unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, [])


def test_every_flipped_byte_of_a_cfrag_is_refused() -> None:
    _, wrapped = wrapped_for()
    (kfrag,) = make_kfrags(OWNER, CONSUMER.umbral_public_key, 1, 1, scope=SCOPE)
    verified = verify_kfrag(
        kfrag, OWNER.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key
    )
    cfrag = reencrypt(verified, wrapped.capsule)
    for position in range(len(cfrag)):
        tampered = bytearray(cfrag)
        tampered[position] ^= 0x01
        with pytest.raises(BadFragment):
            verify_cfrag(
                bytes(tampered),
                wrapped.capsule,
                OWNER.verifying_key,
                wrapped.delegating_key,
                CONSUMER.umbral_public_key,
            )


def test_cfrag_for_another_capsule_or_consumer_is_refused() -> None:
    _, wrapped = wrapped_for()
    _, other = wrapped_for()
    kfrags = make_kfrags(OWNER, CONSUMER.umbral_public_key, 1, 2, scope=SCOPE)
    verified = verify_kfrag(
        kfrags[0], OWNER.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key
    )
    cfrag = reencrypt(verified, other.capsule)
    with pytest.raises(BadFragment):
        verify_cfrag(
            cfrag,
            wrapped.capsule,
            OWNER.verifying_key,
            wrapped.delegating_key,
            CONSUMER.umbral_public_key,
        )
    cfrag = reencrypt(verified, wrapped.capsule)
    with pytest.raises(BadFragment):
        verify_cfrag(
            cfrag,
            wrapped.capsule,
            OWNER.verifying_key,
            wrapped.delegating_key,
            STRANGER.umbral_public_key,
        )


def test_kfrag_made_for_another_consumer_is_refused() -> None:
    _, wrapped = wrapped_for()
    (kfrag,) = make_kfrags(OWNER, STRANGER.umbral_public_key, 1, 1, scope=SCOPE)
    with pytest.raises(BadFragment, match="not made by this owner for this consumer"):
        verify_kfrag(kfrag, OWNER.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key)


def test_kfrag_signed_by_another_owner_is_refused() -> None:
    _, wrapped = wrapped_for()
    # A stranger's fragment, claimed to be the owner's: wrong signer and wrong delegating key.
    (forged,) = make_kfrags(STRANGER, CONSUMER.umbral_public_key, 1, 1, scope=SCOPE)
    with pytest.raises(BadFragment):
        verify_kfrag(
            forged, OWNER.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key
        )
    # Even checked against the stranger's own delegating key, the owner's verifying key fails.
    with pytest.raises(BadFragment):
        verify_kfrag(
            forged,
            OWNER.verifying_key,
            STRANGER.delegating_public_key(SCOPE),
            CONSUMER.umbral_public_key,
        )


def test_kfrag_for_another_scope_is_refused() -> None:
    _, wrapped = wrapped_for()
    (kfrag,) = make_kfrags(OWNER, CONSUMER.umbral_public_key, 1, 1, scope=dataset_scope(42, 4))
    with pytest.raises(BadFragment):
        verify_kfrag(kfrag, OWNER.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key)


def test_tampered_kfrag_never_yields_an_accepted_cfrag() -> None:
    _, wrapped = wrapped_for()
    (kfrag,) = make_kfrags(OWNER, CONSUMER.umbral_public_key, 1, 1, scope=SCOPE)
    keys = (OWNER.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key)
    refused_by_proxy = 0
    for position in range(len(kfrag)):
        tampered = bytearray(kfrag)
        tampered[position] ^= 0x01
        try:
            verified = verify_kfrag(bytes(tampered), *keys)
        except BadFragment:
            refused_by_proxy += 1
            continue
        # The kfrag's signature for the receiver is checked by the consumer, not the proxy:
        # a kfrag altered there passes the proxy's check but its cfrag is refused.
        cfrag = reencrypt(verified, wrapped.capsule)
        with pytest.raises(BadFragment):
            verify_cfrag(cfrag, wrapped.capsule, *keys)
    assert refused_by_proxy >= len(kfrag) - 64
    with pytest.raises(BadFragment, match="malformed"):
        verify_kfrag(kfrag[:-1], *keys)


def test_stranger_cannot_unwrap() -> None:
    data_key, wrapped = wrapped_for()
    with pytest.raises(WrongKey):
        unwrap_own(STRANGER, wrapped)
    kfrags = make_kfrags(OWNER, CONSUMER.umbral_public_key, 1, 1, scope=SCOPE)
    cfrags = cfrags_for(wrapped, kfrags)
    # The cfrags are the consumer's; the stranger's secret cannot open them.
    with pytest.raises(NotEnoughFragments):
        unwrap_reencrypted(STRANGER, wrapped.delegating_key, wrapped, cfrags)
    with pytest.raises(WrongKey):
        unwrap_reencrypted(CONSUMER, OWNER.umbral_public_key, wrapped, cfrags)
    assert unwrap_reencrypted(CONSUMER, wrapped.delegating_key, wrapped, cfrags) == data_key


def test_altered_ciphertext_is_refused() -> None:
    _, wrapped = wrapped_for()
    flipped = bytearray(wrapped.ciphertext)
    flipped[-1] ^= 1
    altered = WrappedKey(wrapped.delegating_key, wrapped.scope, wrapped.capsule, bytes(flipped))
    with pytest.raises(UnwrapFailed):
        unwrap_own(OWNER, altered)
    cfrags = cfrags_for(wrapped, make_kfrags(OWNER, CONSUMER.umbral_public_key, 1, 1, scope=SCOPE))
    with pytest.raises(UnwrapFailed):
        unwrap_reencrypted(CONSUMER, wrapped.delegating_key, altered, cfrags)


def test_account_key_scope_works_too() -> None:
    data_key = os.urandom(32)
    wrapped = wrap_key(data_key, OWNER.umbral_public_key)
    assert wrapped.scope == b""
    assert unwrap_own(OWNER, wrapped) == data_key
    kfrags = make_kfrags(OWNER, CONSUMER.umbral_public_key, 2, 2)
    cfrags = cfrags_for(wrapped, kfrags)
    assert unwrap_reencrypted(CONSUMER, OWNER.umbral_public_key, wrapped, cfrags) == data_key


def test_wrapped_key_json_round_trip_and_strictness() -> None:
    data_key, wrapped = wrapped_for()
    record = json.loads(json.dumps(wrapped.to_json()))
    assert set(record) == {"format", "delegating_key", "scope", "capsule", "ciphertext"}
    assert record["format"] == "datagora.umbral-wrap.v1"
    parsed = WrappedKey.from_json(record)
    assert parsed == wrapped
    assert unwrap_own(OWNER, parsed) == data_key
    assert data_key.hex() not in json.dumps(record)

    bad_records = [
        {**record, "format": "datagora.umbral-wrap.v2"},
        {**record, "extra": ""},
        {k: v for k, v in record.items() if k != "scope"},
        {**record, "capsule": record["capsule"][:-2]},
        {**record, "ciphertext": record["ciphertext"] + "00"},
        {**record, "delegating_key": "02" + "00" * 32},
        {**record, "scope": "zz"},
        {**record, "capsule": record["capsule"].upper()},
        {**record, "scope": 5},
    ]
    for bad in bad_records:
        with pytest.raises(MalformedWrappedKey):
            WrappedKey.from_json(bad)


@pytest.mark.parametrize(("threshold", "shares"), [(0, 1), (3, 2), (1, 256), (-1, 3)])
def test_bad_threshold_parameters(threshold: int, shares: int) -> None:
    with pytest.raises(PreError):
        make_kfrags(OWNER, CONSUMER.umbral_public_key, threshold, shares)


def test_bad_inputs_are_refused_clearly() -> None:
    with pytest.raises(PreError, match="32 bytes"):
        wrap_key(b"short", OWNER.umbral_public_key)
    with pytest.raises(PreError, match="33-byte"):
        wrap_key(os.urandom(32), b"\x02" * 10)
    with pytest.raises(PreError, match="not a valid"):
        make_kfrags(OWNER, b"\x02" + b"\x00" * 32, 1, 1)
    with pytest.raises(PreError):
        dataset_scope(-1, 0)
    with pytest.raises(PreError):
        dataset_scope(0, 2**32)
    _, wrapped = wrapped_for()
    (kfrag,) = make_kfrags(OWNER, CONSUMER.umbral_public_key, 1, 1, scope=SCOPE)
    verified = verify_kfrag(
        kfrag, OWNER.verifying_key, wrapped.delegating_key, CONSUMER.umbral_public_key
    )
    with pytest.raises(PreError, match="capsule is malformed"):
        reencrypt(verified, b"not a capsule")


def test_fragments_carry_no_key_material() -> None:
    data_key, wrapped = wrapped_for()
    kfrags = make_kfrags(OWNER, CONSUMER.umbral_public_key, 2, 3, scope=SCOPE)
    cfrags = [bytes(c) for c in cfrags_for(wrapped, kfrags)]
    secrets = [
        data_key,
        bytes(OWNER.delegating_secret_key(SCOPE).to_be_bytes()),
        bytes(CONSUMER.umbral_secret_key().to_be_bytes()),
        bytes(OWNER.account.key),
    ]
    blob = b"".join([*kfrags, *cfrags, wrapped.capsule, wrapped.ciphertext])
    for secret in secrets:
        assert secret not in blob
