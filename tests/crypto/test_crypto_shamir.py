"""Shamir secret sharing over GF(2^8)."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datagora.crypto.aead import CryptoError
from datagora.crypto.shamir import ShamirShare, combine_secret, split_secret


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=48),
    k=st.integers(1, 8),
    extra=st.integers(0, 4),
    data=st.data(),
)
def test_any_k_shares_rebuild(secret: bytes, k: int, extra: int, data: st.DataObject) -> None:
    shares = split_secret(secret, k, k + extra)
    chosen = data.draw(st.permutations(shares))[:k]
    assert combine_secret(chosen) == secret


def test_every_subset_of_a_3_of_5_split() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 3, 5)
    for subset in itertools.combinations(shares, 3):
        assert combine_secret(list(subset)) == secret


def test_fewer_than_k_shares_are_refused() -> None:
    shares = split_secret(os.urandom(32), 3, 5)
    with pytest.raises(CryptoError, match="need 3"):
        combine_secret(shares[:2])


def test_shares_are_randomised() -> None:
    # Fresh coefficients each time: two splits of one secret share no values.
    secret = os.urandom(32)
    assert split_secret(secret, 2, 3)[0].y != split_secret(secret, 2, 3)[0].y


def test_bad_parameters_and_inputs() -> None:
    with pytest.raises(CryptoError, match="1 <= k <= n <= 255"):
        split_secret(b"x", 0, 3)
    with pytest.raises(CryptoError, match="1 <= k <= n <= 255"):
        split_secret(b"x", 3, 256)
    with pytest.raises(CryptoError, match="empty"):
        split_secret(b"", 1, 1)
    a, b = split_secret(b"abc", 2, 3)[:2]
    with pytest.raises(CryptoError, match="distinct"):
        combine_secret([a, a])
    with pytest.raises(CryptoError, match="different splits"):
        combine_secret([a, ShamirShare(b.x, 3, b.y)])
    with pytest.raises(CryptoError, match="no Shamir"):
        combine_secret([])


def test_repr_hides_values() -> None:
    share = split_secret(b"top secret key material", 2, 3)[0]
    assert share.y.hex() not in repr(share)
