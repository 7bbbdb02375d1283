"""Fees (issue 15, item 6), on the embedded chain and on anvil: the consume-side market
fee earned by the marketplace the buyer used, bounded and inside the price guard; and a
protocol fee that changes only after a delay everyone can see."""

from __future__ import annotations

import pytest

from datagora.ledger import Ledger
from datagora.ledger.errors import (
    InvalidArgument,
    InvalidState,
    LimitExceeded,
    NotAuthorized,
    NotFound,
    PriceAboveMaximum,
)
from helpers import BUYER, DEPLOYER, MARKET, OTHER, OWNER, PRICE, fund, publish

KEY = b"\x03" + bytes(range(32))
FRONTEND = OTHER  # the marketplace the buyer used (not the one the dataset was listed on)


def test_the_buyers_marketplace_earns_a_bounded_consume_fee(ledger: Ledger) -> None:
    pub = publish(ledger)
    dt = ledger.datatoken(pub.dataset)
    fund(ledger, BUYER.address)
    mt, ex = ledger.market_token, ledger.exchange
    _, protocol = ex.protocol_fee()
    watched = (BUYER.address, OWNER.address, MARKET.address, FRONTEND.address, protocol)
    before = {a: mt.balance_of(a) for a in watched}
    q = ex.quote(pub.dataset)
    order = ex.buy_and_order(
        BUYER, pub.dataset, dt, 0, KEY, consume_fee_recipient=FRONTEND.address, consume_fee_bps=250
    )
    assert order.expires_at > 0
    after = {a: mt.balance_of(a) for a in watched}
    fee = PRICE * 250 // 10_000
    assert after[FRONTEND.address] - before[FRONTEND.address] == fee
    assert before[BUYER.address] - after[BUYER.address] == q.total + fee
    # The seller, the listing marketplace and the protocol get what they got before.
    assert after[OWNER.address] - before[OWNER.address] == q.publisher_amount
    assert after[MARKET.address] - before[MARKET.address] == q.market_fee
    assert after[protocol] - before[protocol] == q.protocol_fee
    # Bounded, and inside the buyer's price guard; refused before any token moves.
    with pytest.raises(LimitExceeded):
        ex.buy_and_order(
            BUYER,
            pub.dataset,
            dt,
            0,
            KEY,
            consume_fee_recipient=FRONTEND.address,
            consume_fee_bps=ex.max_consume_fee_bps() + 1,
        )
    with pytest.raises(PriceAboveMaximum):
        ex.buy_and_order(
            BUYER,
            pub.dataset,
            dt,
            0,
            KEY,
            max_price=q.total,  # the price alone: no room for the fee
            consume_fee_recipient=FRONTEND.address,
            consume_fee_bps=100,
        )
    with pytest.raises(InvalidArgument):
        ledger.chain.transact(
            BUYER,
            ex.prepare(
                "buy_and_order_via", pub.dataset, 0, KEY, 2 * PRICE, 0, 0, 0, bytes(32),
                bytes(32), "0x" + "00" * 20, 100,
            ),
            "buy_and_order_via",
        )  # fmt: skip
    assert mt.balance_of(BUYER.address) == after[BUYER.address]
    # Zero: the plain entry point, which the gas target measures, knows nothing of it.
    ex.buy_and_order(BUYER, pub.dataset, dt, 0, KEY, consume_fee_recipient=FRONTEND.address)
    assert mt.balance_of(FRONTEND.address) == after[FRONTEND.address]


def test_a_protocol_fee_change_waits_for_its_delay(ledger: Ledger) -> None:
    ex = ledger.exchange
    old = ex.protocol_fee()
    delay = ex.protocol_fee_delay()
    assert delay == 2 * 86_400
    with pytest.raises(NotAuthorized):
        ex.propose_protocol_fee(OTHER, 1, OTHER.address)
    with pytest.raises(LimitExceeded):
        ex.propose_protocol_fee(DEPLOYER, ex.max_protocol_fee_bps() + 1, OTHER.address)
    with pytest.raises(NotFound):  # nothing proposed
        ex.apply_protocol_fee(OTHER)
    at = ex.propose_protocol_fee(DEPLOYER, 500, OTHER.address)
    assert ex.pending_protocol_fee() == (500, OTHER.address, at)
    assert at >= ledger.chain.timestamp() + delay - 5
    # Until then, every sale pays the old fee: a buyer sees the change coming.
    with pytest.raises(InvalidState, match="delay"):
        ex.apply_protocol_fee(OTHER)
    assert ex.protocol_fee() == old
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    assert ex.quote(pub.dataset).protocol_fee == PRICE * old[0] // 10_000
    # A new proposal replaces the pending one and restarts the delay.
    ledger.chain.advance_time(delay // 2)
    at = ex.propose_protocol_fee(DEPLOYER, 20, OTHER.address)
    ledger.chain.advance_time(delay // 2 + 10)
    with pytest.raises(InvalidState, match="delay"):
        ex.apply_protocol_fee(OTHER)
    ledger.chain.advance_time(delay // 2)
    ex.apply_protocol_fee(BUYER)  # anyone may, once it is due
    assert ex.protocol_fee() == (20, OTHER.address)
    assert ex.pending_protocol_fee() == (0, "0x" + "00" * 20, 0)
    assert ex.quote(pub.dataset).protocol_fee == PRICE * 20 // 10_000
