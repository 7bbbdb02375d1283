"""Helpers shared by test modules (import them with `from helpers import ...`)."""

from __future__ import annotations

import hashlib

from datagora.ledger import Ledger, Pricing, Published, PublishParams, dev_account


def h(text: str) -> bytes:
    """A 32-byte SHA-256, for hashes in tests."""
    return hashlib.sha256(text.encode()).digest()


OWNER = dev_account(1)
BUYER = dev_account(2)
MARKET = dev_account(3)
OTHER = dev_account(4)
DEPLOYER = dev_account(0)
PRICE = 10**18


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
