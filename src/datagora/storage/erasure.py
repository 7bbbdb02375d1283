"""zfec k-of-n erasure coding of one byte string (one encrypted chunk).

The input of ``size`` bytes is cut into ``k`` primary blocks of
``block_size(size, k) = max(1, ceil(size / k))`` bytes, the last one padded with
zero bytes; zfec adds ``n - k`` parity blocks. Block ``i`` (0..n-1) of any ``k``
distinct blocks rebuild the padded input, which is cut back to ``size`` — so the
caller must record ``size`` (the manifest and share header do).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import zfec

from datagora.storage.errors import ErasureError

__all__ = ["MAX_SHARES", "block_size", "check_parameters", "decode_blocks", "encode_blocks"]

MAX_SHARES = 256


def check_parameters(k: int, n: int) -> None:
    """Raise :class:`ErasureError` unless ``1 <= k <= n <= 256``."""
    if type(k) is not int or type(n) is not int or not 1 <= k <= n <= MAX_SHARES:
        raise ErasureError(f"erasure parameters need 1 <= k <= n <= {MAX_SHARES}, got k={k}, n={n}")


def block_size(size: int, k: int) -> int:
    """Bytes per block for an input of ``size`` bytes split ``k`` ways."""
    return max(1, -(-size // k))


@lru_cache(maxsize=32)
def _encoder(k: int, n: int) -> zfec.Encoder:
    return zfec.Encoder(k, n)


@lru_cache(maxsize=32)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


def encode_blocks(data: bytes, k: int, n: int) -> list[bytes | memoryview]:
    """Return the ``n`` blocks of ``data``; any ``k`` of them rebuild it.

    Primary blocks are zero-copy views into ``data`` (zfec returns its input objects
    for them); ``data`` is immutable ``bytes``, so they can never change under the
    caller. Only the last primary block is copied, to pad it.
    """
    check_parameters(k, n)
    if not isinstance(data, bytes):
        raise ErasureError("encode_blocks takes immutable bytes")
    bs = block_size(len(data), k)
    view = memoryview(data)
    primary: list[bytes | memoryview] = []
    for i in range(k):
        piece = view[i * bs : (i + 1) * bs]
        primary.append(piece if len(piece) == bs else bytes(piece) + bytes(bs - len(piece)))
    return list(_encoder(k, n).encode(tuple(primary)))


def decode_blocks(
    blocks: Sequence[tuple[int, bytes | memoryview]], k: int, n: int, size: int
) -> bytes:
    """Rebuild the ``size``-byte input from ``(block_number, block)`` pairs.

    At least ``k`` pairs with distinct block numbers are needed; the first ``k``
    distinct ones are used. Raises :class:`ErasureError` on too few or malformed blocks.
    """
    check_parameters(k, n)
    chosen: dict[int, bytes | memoryview] = {}
    for number, block in blocks:
        if not 0 <= number < n:
            raise ErasureError(f"block number {number} is outside 0..{n - 1}")
        chosen.setdefault(number, block)
        if len(chosen) == k:
            break
    if len(chosen) < k:
        raise ErasureError(f"need {k} distinct blocks to decode, got {len(chosen)}")
    bs = block_size(size, k)
    if any(len(b) != bs for b in chosen.values()):
        raise ErasureError(f"every block must be {bs} bytes for an input of {size} bytes")
    numbers = tuple(chosen)
    primary = _decoder(k, n).decode(tuple(chosen[i] for i in numbers), numbers)
    joined = b"".join(primary)
    if any(joined[size:]):
        raise ErasureError("padding bytes after the recorded size are not zero")
    return joined[:size]
