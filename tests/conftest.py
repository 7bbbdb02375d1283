"""Shared fixtures: a ledger on the embedded chain, on a real anvil process and (for the
tests marked `hardhat`) on Hardhat Network."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest

from datagora.ledger import Chain, Ledger, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ledger.hardhat import Hardhat
from helpers import BUYER, DEPLOYER, MARKET, OTHER, OWNER, PRICE, fund, h, hardhat_or_skip, publish

# Older test modules import these from conftest; new ones use `helpers`.
__all__ = ["BUYER", "DEPLOYER", "MARKET", "OTHER", "OWNER", "PRICE", "fund", "h", "publish"]


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def hardhat() -> Iterator[Hardhat]:
    """Hardhat Network, the second EVM: missing, a skip that says how to install it
    (a failure under CI, where `make setup` has run)."""
    with Hardhat(install=hardhat_or_skip()) as node:
        yield node


@pytest.fixture(scope="session")
def _hardhat_ledger(hardhat: Hardhat) -> Ledger:
    return Ledger.deploy(Chain.rpc(hardhat.url), dev_account(0))


@pytest.fixture(scope="session")
def _embedded_ledger() -> Ledger:
    return Ledger.embedded()


@pytest.fixture(scope="session")
def _anvil_ledger(anvil: Anvil) -> Ledger:
    return Ledger.deploy(Chain.rpc(anvil.url), dev_account(0))


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A deployed ledger, on each backend; every test starts from the same state.
    `helpers.ON_EVERY_NODE` adds Hardhat Network for the tests it marks."""
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


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Name any thread still running once every test and fixture is done, and then
    leave without interpreter finalization: a daemon thread still inside a C
    extension when the interpreter tears down can crash the process after every
    test passed (CI saw a segmentation fault there once, a thread in web3's keccak)."""
    alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if alive:
        sys.stdout.flush()
        sys.stderr.write(f"threads still running after the tests: {', '.join(alive)}\n")
        sys.stderr.flush()
        os._exit(_exit_status)
