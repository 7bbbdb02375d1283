"""A story with every kind of event the ledger has today, shared by the audit tests."""

from __future__ import annotations

from dataclasses import dataclass

from datagora.ledger import DatasetState, Ledger, ListKind, Pricing
from helpers import BUYER, MARKET, OTHER, OWNER, fund, h, publish

KEY = bytes([2]) + h("consumer key")


@dataclass
class Story:
    dataset: int
    free: int
    other: int
    record_id: int


def tell(ledger: Ledger) -> Story:
    """Publish, sell, order, dispense, request/grant/deny/revoke, list, record, update,
    hand over and disable: every event kind of today's contracts."""
    p = publish(ledger)
    other = publish(ledger, owner=OTHER)  # noise: must never show in p's timeline
    free = publish(ledger, Pricing.FREE)
    token = ledger.datatoken(p.dataset)
    fund(ledger, BUYER.address)
    ledger.exchange.buy_and_order(BUYER, p.dataset, token, 0, KEY)
    ledger.exchange.buy_and_order(BUYER, other.dataset, ledger.datatoken(other.dataset), 0, KEY)
    token.mint(OWNER, BUYER.address, 2)
    token.transfer(BUYER, MARKET.address, 1)
    token.order(BUYER, 0, KEY)
    ledger.exchange.set_price(OWNER, p.dataset, 2 * 10**18)
    ledger.dispenser.dispense_and_order(BUYER, free.dataset, ledger.datatoken(free.dataset))
    granted, _ = ledger.access.request(BUYER, p.dataset, "cancer research", KEY)
    ledger.access.grant(OWNER, granted, ledger.chain.timestamp() + 3600)
    denied, _ = ledger.access.request(MARKET, p.dataset, "resale", KEY)
    ledger.access.deny(OWNER, denied, "no resale")
    ledger.access.revoke(OWNER, granted)
    ledger.access.set_list(OWNER, p.dataset, MARKET.address, ListKind.DENY)
    ledger.access.request(BUYER, other.dataset, "noise", KEY)
    record = ledger.ciphertexts.store(OWNER, b"sealed key material", p.dataset, h("slot"))
    ledger.data_nft.update(OWNER, p.dataset, h("metadata v2"), "https://x/v2", h("m2"), h("r2"))
    ledger.data_nft.transfer(OWNER, p.dataset, OTHER.address)
    # The new holder re-keys (a new version wrapped to it) before it may change the state.
    ledger.data_nft.update(OTHER, p.dataset, h("metadata v3"), "https://x/v3", h("m3"), h("r3"))
    ledger.data_nft.set_state(OTHER, p.dataset, DatasetState.DISABLED)
    ledger.data_nft.update(OTHER, other.dataset, h("other v2"), "https://x/o2")
    return Story(p.dataset, free.dataset, other.dataset, record.record_id)
