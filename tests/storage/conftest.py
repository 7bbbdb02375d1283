"""Fixtures of the storage tests."""

from __future__ import annotations

import pytest
from storage_helpers import Encoded, encode_bytes


@pytest.fixture
def sample() -> Encoded:
    return encode_bytes(b"rows of private data, " * 40, chunk_size=100, k=3, n=5)
