"""zfec k-of-n coding of one byte string."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datagora.storage.erasure import block_size, decode_blocks, encode_blocks
from datagora.storage.errors import ErasureError


@st.composite
def code_params(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, 16))
    return draw(st.integers(1, n)), n


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=600), kn=code_params(), choice=st.data())
def test_any_k_blocks_give_back_exact_bytes(
    data: bytes, kn: tuple[int, int], choice: st.DataObject
) -> None:
    k, n = kn
    blocks = encode_blocks(data, k, n)
    assert len(blocks) == n
    assert all(len(b) == block_size(len(data), k) for b in blocks)
    numbers = choice.draw(st.permutations(range(n)))[:k]
    assert decode_blocks([(i, blocks[i]) for i in numbers], k, n, len(data)) == data


def test_mutable_input_buffers_are_refused() -> None:
    # zfec hands back its input objects for primary blocks, and encode_blocks passes
    # views of its input: only immutable bytes keep the blocks from changing later.
    buffer = bytearray(b"abcdefgh" * 4)
    with pytest.raises(ErasureError, match="immutable"):
        encode_blocks(buffer, 4, 6)  # type: ignore[arg-type]
    blocks = encode_blocks(bytes(buffer), 4, 6)
    snapshot = [bytes(b) for b in blocks]
    buffer[:] = bytes(len(buffer))
    assert [bytes(b) for b in blocks] == snapshot


def test_errors() -> None:
    blocks = encode_blocks(b"0123456789", 3, 5)
    with pytest.raises(ErasureError, match="1 <= k <= n <= 256"):
        encode_blocks(b"x", 0, 2)
    with pytest.raises(ErasureError, match="1 <= k <= n <= 256"):
        encode_blocks(b"x", 3, 2)
    with pytest.raises(ErasureError, match="need 3 distinct"):
        decode_blocks([(0, blocks[0]), (0, blocks[0]), (1, blocks[1])], 3, 5, 10)
    with pytest.raises(ErasureError, match="outside"):
        decode_blocks([(7, blocks[0])], 3, 5, 10)
    with pytest.raises(ErasureError, match="every block must be"):
        decode_blocks([(0, blocks[0]), (1, blocks[1]), (2, blocks[2] + b"x")], 3, 5, 10)
    with pytest.raises(ErasureError, match="padding"):
        # Claiming a shorter size than was encoded exposes non-zero "padding".
        longer = encode_blocks(b"0123456789A", 3, 5)
        decode_blocks([(i, longer[i]) for i in range(3)], 3, 5, 10)
