"""Audit fixtures: the story told once on the embedded chain, for tests that only read it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from story import Story, tell

from datagora.ledger import Ledger


@pytest.fixture(scope="module")
def told(_embedded_ledger: Ledger) -> Iterator[tuple[Ledger, Story]]:
    """The story, told once on the embedded chain for the tests that only read it."""
    snapshot = _embedded_ledger.chain.snapshot()
    try:
        yield _embedded_ledger, tell(_embedded_ledger)
    finally:
        _embedded_ledger.chain.revert(snapshot)
