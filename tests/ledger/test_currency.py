"""An existing ERC-20 as the market currency (issue 15, item 8), on the embedded chain and
on anvil: a plain token without EIP-2612 permit (snekmate, `PlainToken.vy`) and one with
permit; buying, fees and the compute escrow all pay in it."""

from __future__ import annotations

import pytest

from datagora.errors import ConfigError
from datagora.ledger import Ledger, deploy_contracts
from datagora.ledger.compiler import compile_contract
from helpers import BUYER, DEPLOYER, MARKET, OWNER, PRICE, h, publish

KEY = b"\x03" + bytes(range(32))


def plain_token(ledger: Ledger, decimals: int = 6) -> str:
    """A stablecoin of the older kind: no permit, minted by DEPLOYER."""
    compiled = compile_contract("PlainToken")
    return ledger.chain.deploy(
        DEPLOYER, compiled.abi, compiled.bytecode, "Plain USD", "PUSD", decimals
    )


def test_a_plain_erc20_without_permit_is_the_currency(ledger: Ledger) -> None:
    token = plain_token(ledger)
    market = Ledger(ledger.chain, deploy_contracts(ledger.chain, DEPLOYER, currency=token))
    assert market.deployment.currency == token == market.market_token.address
    assert market.exchange.address != ledger.exchange.address  # a second deployment
    mt = market.market_token
    assert (mt.symbol(), mt.decimals(), mt.supports_permit()) == ("PUSD", 6, False)
    mt.mint(DEPLOYER, BUYER.address, 100 * PRICE)
    pub = publish(market)
    dt = market.datatoken(pub.dataset)
    _, protocol = market.exchange.protocol_fee()
    before = {a: mt.balance_of(a) for a in (BUYER.address, OWNER.address, MARKET.address, protocol)}
    # Without permit, buy-and-order falls back to the allowance (an approve goes first).
    assert mt.allowance(BUYER.address, market.exchange.address) == 0
    order = market.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert order.expires_at > 0 and dt.has_valid_order(BUYER.address, 0)
    after = {a: mt.balance_of(a) for a in before}
    quote = market.exchange.quote(pub.dataset)
    assert before[BUYER.address] - after[BUYER.address] == quote.total == PRICE
    assert after[MARKET.address] - before[MARKET.address] == quote.market_fee > 0
    assert after[OWNER.address] - before[OWNER.address] == quote.publisher_amount
    # A second purchase uses what is left of nothing: it approves again, and pays again.
    market.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert mt.balance_of(BUYER.address) == before[BUYER.address] - 2 * PRICE
    # The compute escrow takes the same currency.
    market.compute.set_job_terms(OWNER, pub.dataset, 5, 3600)
    mt.approve(BUYER, market.compute.address, 5)
    lock = market.compute.lock(BUYER, pub.dataset, h("algo"), h("p"), KEY)
    assert mt.balance_of(market.compute.address) == 5
    market.compute.reclaim(BUYER, lock.escrow)
    assert mt.balance_of(market.compute.address) == 0


def test_an_existing_token_with_permit_buys_in_one_transaction(ledger: Ledger) -> None:
    compiled = compile_contract("MarketToken")
    token = ledger.chain.deploy(DEPLOYER, compiled.abi, compiled.bytecode, "Ocean-like", "OCN")
    market = Ledger(ledger.chain, deploy_contracts(ledger.chain, DEPLOYER, currency=token))
    assert market.market_token.supports_permit()
    market.market_token.mint(DEPLOYER, BUYER.address, 10 * PRICE)
    pub = publish(market)
    nonce = ledger.chain.w3.eth.get_transaction_count(BUYER.address)
    market.exchange.buy_and_order(BUYER, pub.dataset, market.datatoken(pub.dataset), 0, KEY)
    assert ledger.chain.w3.eth.get_transaction_count(BUYER.address) == nonce + 1


def test_a_currency_that_is_not_an_erc20_is_refused_before_deploying(ledger: Ledger) -> None:
    block = ledger.chain.block_number
    with pytest.raises(ConfigError, match="no contract"):
        deploy_contracts(ledger.chain, DEPLOYER, currency=BUYER.address)
    with pytest.raises(ConfigError, match="not an address"):
        deploy_contracts(ledger.chain, DEPLOYER, currency="0x1234")
    with pytest.raises(ConfigError, match="does not answer as an ERC-20"):
        deploy_contracts(ledger.chain, DEPLOYER, currency=ledger.data_nft.address)
    assert ledger.chain.block_number == block  # nothing was deployed
