"""Helpers shared by test modules (import them with `from helpers import ...`)."""

from __future__ import annotations

import hashlib
import os

import pytest

from datagora.errors import ConfigError
from datagora.ledger import Ledger, Pricing, Published, PublishParams, dev_account
from datagora.ledger.hardhat import HardhatInstall, find_hardhat


def h(text: str) -> bytes:
    """A 32-byte SHA-256, for hashes in tests."""
    return hashlib.sha256(text.encode()).digest()


OWNER = dev_account(1)
BUYER = dev_account(2)
MARKET = dev_account(3)
OTHER = dev_account(4)
DEPLOYER = dev_account(0)
PRICE = 10**18

ON_EVERY_NODE = pytest.mark.parametrize(
    "ledger",
    [
        "embedded",
        pytest.param("anvil", marks=pytest.mark.anvil),
        pytest.param("hardhat", marks=pytest.mark.hardhat),
    ],
    indirect=True,
)
"""Runs a test of the `ledger` fixture on Hardhat Network too (the second EVM): for
the key flows, kept few so that the Hardhat part of the suite stays short."""


def publish(
    ledger: Ledger, pricing: Pricing = Pricing.FIXED, owner=OWNER, **overrides: object
) -> Published:
    """Publish a dataset with sensible test defaults."""
    fields: dict[str, object] = {
        "metadata_hash": h("metadata"),
        "metadata_uri": "https://example.org/meta.json",
        "manifest_hash": h("manifest"),
        "merkle_root": h("root"),
        "pricing": pricing,
        "price": PRICE if pricing == Pricing.FIXED else 0,
        "market_fee_bps": 100 if pricing == Pricing.FIXED else 0,
        "market_fee_recipient": MARKET.address,
        "dispenser_max_per_address": 2 if pricing == Pricing.FREE else 0,
    }
    fields.update(overrides)
    return ledger.factory.publish(owner, PublishParams(**fields))  # type: ignore[arg-type]


def fund(ledger: Ledger, who: str, amount: int = 100 * PRICE) -> None:
    ledger.market_token.mint(DEPLOYER, who, amount)


def hardhat_or_skip() -> HardhatInstall:
    """Hardhat and its Node.js; missing, the test is skipped with one line saying how to
    install them, except under CI (where `make setup` has run), where it fails."""
    try:
        return find_hardhat()
    except ConfigError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Hardhat is required under CI: {exc}")
        pytest.skip(str(exc))
