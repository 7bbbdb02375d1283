"""Shamir secret sharing over GF(2^8), for optional threshold custody of data keys.

A secret of any length is split byte-wise: for every byte a random polynomial of
degree ``k - 1`` over GF(2^8) (reduction polynomial x^8 + x^4 + x^3 + x + 1, 0x11B)
has that byte as its constant term, and share ``x`` (1..n) holds the polynomial's
values at ``x``. Any ``k`` shares rebuild the secret by Lagrange interpolation at 0;
fewer reveal nothing about it.

Plain Shamir does not authenticate shares: a wrong share yields a wrong secret
silently. Callers check the rebuilt secret (for a data key: open the wrapped key or
decrypt a chunk with it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from datagora.crypto.aead import CryptoError

__all__ = ["ShamirShare", "combine_secret", "split_secret"]


def _tables() -> tuple[list[int], list[int]]:
    exp = [0] * 512
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = value
        log[value] = power
        # Multiply by the generator 0x03: value * 2 (with reduction) XOR value.
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= 0x11B
        value = doubled ^ value
    for power in range(255, 512):
        exp[power] = exp[power - 255]
    return exp, log


_EXP, _LOG = _tables()


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    if a == 0:
        return 0
    return _EXP[_LOG[a] - _LOG[b] + 255]


@dataclass(frozen=True, slots=True)
class ShamirShare:
    """One share: evaluation point ``x`` (1..255), the ``threshold`` k, and the values ``y``."""

    x: int
    threshold: int
    y: bytes

    def __repr__(self) -> str:
        # The values are secret material; keep them out of logs.
        return f"ShamirShare(x={self.x}, threshold={self.threshold}, y=<{len(self.y)} bytes>)"


def split_secret(secret: bytes, k: int, n: int) -> list[ShamirShare]:
    """Split ``secret`` into ``n`` shares, any ``k`` of which rebuild it (1 <= k <= n <= 255)."""
    if not 1 <= k <= n <= 255:
        raise CryptoError(f"Shamir parameters need 1 <= k <= n <= 255, got k={k}, n={n}")
    if not secret:
        raise CryptoError("cannot split an empty secret")
    # coefficients[j][i] is the degree-(j+1) coefficient for secret byte i.
    coefficients = [os.urandom(len(secret)) for _ in range(k - 1)]
    shares = []
    for x in range(1, n + 1):
        ys = bytearray(len(secret))
        for i, constant in enumerate(secret):
            # Horner's rule from the highest-degree coefficient down.
            acc = 0
            for coeff in reversed(coefficients):
                acc = _mul(acc, x) ^ coeff[i]
            ys[i] = _mul(acc, x) ^ constant
        shares.append(ShamirShare(x, k, bytes(ys)))
    return shares


def combine_secret(shares: Sequence[ShamirShare]) -> bytes:
    """Rebuild the secret from at least ``threshold`` distinct shares."""
    if not shares:
        raise CryptoError("no Shamir shares given")
    threshold = shares[0].threshold
    length = len(shares[0].y)
    if any(s.threshold != threshold or len(s.y) != length for s in shares):
        raise CryptoError("Shamir shares come from different splits")
    xs = [s.x for s in shares]
    if any(not 1 <= x <= 255 for x in xs) or len(set(xs)) != len(xs):
        raise CryptoError("Shamir shares must have distinct x in 1..255")
    if len(shares) < threshold:
        raise CryptoError(f"need {threshold} Shamir shares, got {len(shares)}")
    used = shares[:threshold]
    # Lagrange basis values at 0: l_j(0) = prod_{m != j} x_m / (x_m - x_j); minus is XOR.
    basis = []
    for j, sj in enumerate(used):
        num, den = 1, 1
        for m, sm in enumerate(used):
            if m != j:
                num = _mul(num, sm.x)
                den = _mul(den, sm.x ^ sj.x)
        basis.append(_div(num, den))
    out = bytearray(length)
    for weight, share in zip(basis, used, strict=True):
        for i, value in enumerate(share.y):
            out[i] ^= _mul(weight, value)
    return bytes(out)
