"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_helpers import DealNetwork, Encoded, encode_bytes

from datagora.ledger import Ledger


@pytest.fixture
def sample() -> Encoded:
    return encode_bytes(b"rows of private data, " * 40, chunk_size=100, k=3, n=5)


@pytest.fixture
def deal_network(tmp_path: Path, embedded_ledger: Ledger) -> Iterator[DealNetwork]:
    """Six registered storage nodes and a funded owner on the embedded chain."""
    network = DealNetwork(embedded_ledger, tmp_path, 6)
    try:
        yield network
    finally:
        network.stop()


@pytest.fixture
def anvil_deal_network(tmp_path: Path, _anvil_ledger: Ledger) -> Iterator[DealNetwork]:
    """Four registered storage nodes and a funded owner on anvil (reverted after)."""
    snapshot = _anvil_ledger.chain.snapshot()
    network = DealNetwork(_anvil_ledger, tmp_path, 4)
    try:
        yield network
    finally:
        network.stop()
        _anvil_ledger.chain.revert(snapshot)
