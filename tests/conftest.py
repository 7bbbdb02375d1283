"""Shared fixtures: a ledger on the embedded chain and on a real anvil process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datagora.ledger import Chain, Ledger, dev_account
from datagora.ledger.anvil import Anvil
from helpers import BUYER, DEPLOYER, MARKET, OTHER, OWNER, PRICE, fund, h, publish

# Older test modules import these from conftest; new ones use `helpers`.
__all__ = ["BUYER", "DEPLOYER", "MARKET", "OTHER", "OWNER", "PRICE", "fund", "h", "publish"]


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def _embedded_ledger() -> Ledger:
    return Ledger.embedded()


@pytest.fixture(scope="session")
def _anvil_ledger(anvil: Anvil) -> Ledger:
    return Ledger.deploy(Chain.rpc(anvil.url), dev_account(0))


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A deployed ledger, on each backend; every test starts from the same state."""
    shared: Ledger = request.getfixturevalue(f"_{request.param}_ledger")
    snapshot = shared.chain.snapshot()
    try:
        yield shared
    finally:
        shared.chain.revert(snapshot)


@pytest.fixture
def embedded_ledger(_embedded_ledger: Ledger) -> Iterator[Ledger]:
    """The embedded ledger alone (for tests too slow to repeat on every backend)."""
    snapshot = _embedded_ledger.chain.snapshot()
    try:
        yield _embedded_ledger
    finally:
        _embedded_ledger.chain.revert(snapshot)
