"""Fair exchange: nobody pays for nothing (issue 15), on the embedded chain and on anvil.

Each test names the liar (a seller who front-runs the terms, an owner who disables
or deny-lists, a metadata-only update) and asserts that no token moves for an
order that cannot be delivered, and that paid terms never change.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from datagora.ledger import DatasetState, Ledger, ListKind, Pricing
from datagora.ledger.errors import (
    InsufficientFunds,
    InvalidState,
    LimitExceeded,
    NotAuthorized,
    NotController,
    NotFound,
    PriceAboveMaximum,
    SignatureError,
    TermsChanged,
)
from datagora.ledger.tokens import Permit
from helpers import BUYER, MARKET, ON_EVERY_NODE, OTHER, OWNER, PRICE, fund, h, publish

KEY = b"\x03" + bytes(range(32))
COMPUTE = 1


def balances(ledger: Ledger) -> dict[str, int]:
    _, protocol = ledger.exchange.protocol_fee()
    mt = ledger.market_token
    return {a: mt.balance_of(a) for a in (BUYER.address, OWNER.address, MARKET.address, protocol)}


# -- 1. order terms are fixed at payment -------------------------------------------------


def test_a_seller_who_shortens_the_validity_before_the_purchase_is_paid_nothing(
    ledger: Ledger,
) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    seen = dt.terms_floor(0)  # the buyer reads 86,400 s and decides to buy
    assert seen == ledger.chain.timestamp() + 86_400
    dt.set_service(OWNER, 0, 1)  # the seller front-runs: orders now last 1 s
    before = balances(ledger)
    with pytest.raises(TermsChanged, match="order terms changed"):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY, min_expires_at=seen)
    assert balances(ledger) == before
    assert dt.order_expires_at(BUYER.address, 0) == 0
    # Buying again under the terms now shown is the buyer's choice.
    assert ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY).expires_at > 0


def test_the_terms_guard_covers_the_dispenser_and_held_datatokens(ledger: Ledger) -> None:
    free = publish(ledger, Pricing.FREE)
    dt = ledger.datatoken(free.dataset)
    seen = dt.terms_floor(0)
    dt.set_service(OWNER, 0, 1)
    with pytest.raises(TermsChanged):
        ledger.dispenser.dispense_and_order(BUYER, free.dataset, dt, 0, KEY, min_expires_at=seen)
    assert ledger.dispenser.dispensed(free.dataset, BUYER.address) == 0
    dt.mint(OWNER, BUYER.address, 1)
    with pytest.raises(TermsChanged):
        dt.order(BUYER, 0, KEY, min_expires_at=seen)
    assert dt.balance_of(BUYER.address) == 1  # the datatoken is kept


def test_a_later_change_of_terms_never_touches_a_paid_order(ledger: Ledger) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    order = ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    dt.set_service(OWNER, 0, 1)
    dt.set_service(OWNER, 0, 0)  # the service closed for new orders
    assert dt.order_expires_at(BUYER.address, 0) == order.expires_at
    assert dt.has_valid_order(BUYER.address, 0)


# -- 2. dataset state is enforced on every access path -----------------------------------


def test_a_disabled_dataset_stops_serving_and_a_retired_one_never_serves_again(
    ledger: Ledger,
) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    ledger.data_nft.set_state(OWNER, pub.dataset, DatasetState.DISABLED)
    # The old code answered True here: proxies and compute kept serving.
    assert not dt.has_valid_order(BUYER.address, 0)
    assert not ledger.data_nft.may_use(pub.dataset, BUYER.address)
    before = balances(ledger)
    with pytest.raises(InvalidState, match="not active"):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert balances(ledger) == before
    # Disabling pauses: the paid expiry is kept and serves again once re-activated.
    ledger.data_nft.set_state(OWNER, pub.dataset, DatasetState.ACTIVE)
    assert dt.has_valid_order(BUYER.address, 0)
    ledger.data_nft.set_state(OWNER, pub.dataset, DatasetState.RETIRED)
    assert not dt.has_valid_order(BUYER.address, 0)
    dt.mint(OWNER, BUYER.address, 1)
    with pytest.raises(InvalidState):
        dt.order(BUYER, 0, KEY)
    assert dt.balance_of(BUYER.address) == 1


# -- 3. refuse before taking money --------------------------------------------------------


def test_a_deny_listed_consumer_cannot_pay(ledger: Ledger) -> None:
    pub, free = publish(ledger), publish(ledger, Pricing.FREE)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    assert ledger.data_nft.list_flags(pub.dataset) == 0
    ledger.access.set_list(OWNER, pub.dataset, BUYER.address, ListKind.DENY)
    ledger.access.set_list(OWNER, free.dataset, BUYER.address, ListKind.DENY)
    assert ledger.data_nft.list_flags(pub.dataset) == 1
    before = balances(ledger)
    # The old code took the payment and the proxies then refused the key.
    with pytest.raises(InvalidState, match="deny-listed"):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert balances(ledger) == before
    with pytest.raises(InvalidState, match="deny-listed"):
        ledger.dispenser.dispense_and_order(
            BUYER, free.dataset, ledger.datatoken(free.dataset), 0, KEY
        )
    assert ledger.dispenser.dispensed(free.dataset, BUYER.address) == 0
    # Nor can someone else spend a datatoken on an order for them.
    dt.mint(OWNER, OTHER.address, 1)
    with pytest.raises(InvalidState, match="deny-listed"):
        dt.order(OTHER, 0, KEY, consumer=BUYER.address)
    # Taken off the list, the buyer may buy again, and the flag clears.
    ledger.access.set_list(OWNER, pub.dataset, BUYER.address, ListKind.NONE)
    assert ledger.data_nft.list_flags(pub.dataset) == 0
    ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    # Deny-listed after paying: the order stops serving (the proxies' view agrees).
    ledger.access.set_list(OWNER, pub.dataset, BUYER.address, ListKind.DENY)
    assert not dt.has_valid_order(BUYER.address, 0)


def test_sales_restricted_to_the_allow_list(ledger: Ledger) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    fund(ledger, OTHER.address)
    dt = ledger.datatoken(pub.dataset)
    with pytest.raises(NotController):
        ledger.access.restrict_sales(OTHER, pub.dataset, True)
    ledger.access.restrict_sales(OWNER, pub.dataset, True)
    ledger.access.set_list(OWNER, pub.dataset, BUYER.address, ListKind.ALLOW)
    assert ledger.access.sales_restricted(pub.dataset)
    before = ledger.market_token.balance_of(OTHER.address)
    with pytest.raises(NotAuthorized, match="allow-list"):
        ledger.exchange.buy_and_order(OTHER, pub.dataset, dt, 0, KEY)
    assert ledger.market_token.balance_of(OTHER.address) == before
    assert ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY).consumer == BUYER.address
    ledger.access.restrict_sales(OWNER, pub.dataset, False)
    assert ledger.data_nft.list_flags(pub.dataset) == 0
    ledger.exchange.buy_and_order(OTHER, pub.dataset, dt, 0, KEY)


# -- 4. services: closed services, compute-only datasets ----------------------------------


def test_a_compute_only_dataset_never_sells_a_download(ledger: Ledger) -> None:
    pub = publish(ledger, service_id=COMPUTE, order_timeout=3_600)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    assert (dt.service_timeout(0), dt.service_timeout(COMPUTE)) == (0, 3_600)
    before = balances(ledger)
    with pytest.raises(NotFound, match="unknown service"):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert balances(ledger) == before
    order = ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, COMPUTE, KEY)
    assert order.service_id == COMPUTE and not dt.has_valid_order(BUYER.address, 0)


def test_prices_per_service(ledger: Ledger) -> None:
    """Compute priced at 3 datatokens, download at 1: each order pays its own service's
    price, whichever way it is paid, and a seller who raises a price before the order
    is mined is paid nothing."""
    pub = publish(ledger, market_fee_bps=0)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    dt.set_service(OWNER, COMPUTE, 3_600)
    with pytest.raises(NotController):
        dt.set_service_units(OTHER, COMPUTE, 3)
    dt.set_service_units(OWNER, COMPUTE, 3)
    assert (dt.service_units(0), dt.service_units(COMPUTE)) == (1, 3)
    assert dt.service_timeout(COMPUTE) == 3_600  # the price leaves the validity alone
    mt = ledger.market_token
    paid = mt.balance_of(BUYER.address)
    ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, COMPUTE, KEY)
    assert paid - mt.balance_of(BUYER.address) == 3 * PRICE
    paid = mt.balance_of(BUYER.address)
    ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert paid - mt.balance_of(BUYER.address) == PRICE
    # The buyer saw the download at 1 datatoken; the seller raises it to 5 first.
    seen = ledger.exchange.quote(pub.dataset, dt.service_units(0)).total
    dt.set_service_units(OWNER, 0, 5)
    paid = mt.balance_of(BUYER.address)
    with pytest.raises(PriceAboveMaximum):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY, max_price=seen)
    assert mt.balance_of(BUYER.address) == paid
    # Datatokens bought in bulk pay a service's price in datatokens, under the same guard.
    dt.mint(OWNER, BUYER.address, 4)
    with pytest.raises(PriceAboveMaximum):
        dt.order(BUYER, COMPUTE, KEY, max_units=1)
    with pytest.raises(InsufficientFunds):
        dt.order(BUYER, 0, KEY)  # 5 needed, 4 held
    dt.order(BUYER, COMPUTE, KEY)
    assert dt.balance_of(BUYER.address) == 1
    # Free datasets: a service's datatokens count against the per-address limit.
    free = publish(ledger, Pricing.FREE, dispenser_max_per_address=2)
    free_dt = ledger.datatoken(free.dataset)
    free_dt.set_service_units(OWNER, 0, 3)
    with pytest.raises(LimitExceeded):
        ledger.dispenser.dispense_and_order(BUYER, free.dataset, free_dt, 0, KEY)
    free_dt.set_service_units(OWNER, 0, 2)
    ledger.dispenser.dispense_and_order(BUYER, free.dataset, free_dt, 0, KEY)
    assert ledger.dispenser.dispensed(free.dataset, BUYER.address) == 2


def test_a_closed_service_sells_nothing(ledger: Ledger) -> None:
    free = publish(ledger, Pricing.FREE)
    dt = ledger.datatoken(free.dataset)
    dt.set_service(OWNER, 0, 0)
    with pytest.raises(NotFound):
        ledger.dispenser.dispense_and_order(BUYER, free.dataset, dt, 0, KEY)
    assert ledger.dispenser.dispensed(free.dataset, BUYER.address) == 0
    ledger.dispenser.dispense(BUYER, free.dataset, 2)
    with pytest.raises(LimitExceeded):
        ledger.dispenser.dispense(BUYER, free.dataset, 1)


# -- 5. a metadata update never erases the storage commitment ----------------------------


def test_a_metadata_only_update_keeps_the_storage_commitment(ledger: Ledger) -> None:
    pub = publish(ledger)
    tx = ledger.data_nft.update(OWNER, pub.dataset, h("meta2"), "https://example.org/v2.json")
    info = ledger.data_nft.get_dataset(pub.dataset)
    # The old code zeroed both: the data could no longer be verified or found.
    assert (info.manifest_hash, info.merkle_root) == (h("manifest"), h("root"))
    events = [e for e in ledger.events(tx.block_number, tx.block_number)]
    (update,) = [e for e in events if e.name == "DatasetUpdated"]
    assert update["new_manifest_hash"] == h("manifest") and update["new_merkle_root"] == h("root")
    # EIP-4906, which supportsInterface(0x49064906) claims: wallets refresh the token.
    (refresh,) = [e for e in events if e.name == "MetadataUpdate"]
    assert refresh["_tokenId"] == pub.dataset
    assert ledger.data_nft._view("supportsInterface", bytes.fromhex("49064906"))


# -- 6. the datatoken's EIP-712 domain, as a wallet reads it ------------------------------


@ON_EVERY_NODE
def test_a_permit_signed_over_the_domain_built_from_name_is_accepted(
    ledger: Ledger,
) -> None:
    """A wallet builds a permit's domain from `name()` (ethers, viem without EIP-5267):
    the datatoken's EIP-712 domain name is its own `name()` ("datagora dataset #N"),
    which `eip712Domain()` returns too. Before, it was the template's "datagora
    datatoken" and such a permit was refused ("invalid signature")."""
    pub = publish(ledger, Pricing.NONE)
    dt = ledger.datatoken(pub.dataset)
    dt.mint(OWNER, BUYER.address, 1)
    fields, name, version, chain_id, verifying, _, _ = dt._view("eip712Domain")
    assert fields == b"\x0f" and verifying == dt.address and chain_id == ledger.chain.chain_id
    deadline = ledger.chain.timestamp() + 600

    def wallet_permit(domain_name: str) -> Permit:
        typed = encode_typed_data(
            domain_data={
                "name": domain_name,
                "version": version,
                "chainId": chain_id,
                "verifyingContract": verifying,
            },
            message_types={
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            message_data={
                "owner": BUYER.address,
                "spender": OTHER.address,
                "value": 1,
                "nonce": dt.nonce_of(BUYER.address),
                "deadline": deadline,
            },
        )
        signed = Account.sign_message(typed, BUYER.key)
        r, s = signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
        return Permit(BUYER.address, OTHER.address, 1, deadline, signed.v, r, s)

    assert name == dt.name() == f"datagora dataset #{pub.dataset}"
    with pytest.raises(SignatureError):  # the template's old name is not this domain
        dt.permit(OTHER, wallet_permit("datagora datatoken"))
    signed = wallet_permit(dt.name())
    dt.permit(OTHER, signed)
    assert dt.allowance(BUYER.address, OTHER.address) == 1
    with pytest.raises(SignatureError):  # a permit is used once (its nonce moved on)
        dt.permit(OTHER, signed)
    # The Python signer reads the same domain.
    permit = dt.sign_permit(BUYER, MARKET.address, 1, deadline)
    dt.permit(OTHER, permit)
    assert dt.allowance(BUYER.address, MARKET.address) == 1


# -- 7. fees changeable by the marketplace, a dispenser that cannot be farmed ------------


def test_the_marketplace_moves_or_lowers_its_fee_but_never_raises_it(ledger: Ledger) -> None:
    pub = publish(ledger)  # 100 bps to MARKET
    with pytest.raises(NotAuthorized):
        ledger.exchange.set_market_fee(OWNER, pub.dataset, 0, OWNER.address)
    with pytest.raises(LimitExceeded):
        ledger.exchange.set_market_fee(MARKET, pub.dataset, 101, MARKET.address)
    ledger.exchange.set_market_fee(MARKET, pub.dataset, 50, OTHER.address)
    assert ledger.exchange.market_fee(pub.dataset) == (50, OTHER.address)
    assert ledger.exchange.is_active(pub.dataset)
    with pytest.raises(NotAuthorized):
        ledger.exchange.set_market_fee(MARKET, pub.dataset, 10, MARKET.address)
    fund(ledger, BUYER.address)
    before = ledger.market_token.balance_of(OTHER.address)
    ledger.exchange.buy_and_order(BUYER, pub.dataset, ledger.datatoken(pub.dataset), 0, KEY)
    assert ledger.market_token.balance_of(OTHER.address) == before + PRICE * 50 // 10_000


def test_a_dispenser_cap_stops_a_farm_of_fresh_addresses(ledger: Ledger) -> None:
    free = publish(ledger, Pricing.FREE)  # 2 per address
    dt = ledger.datatoken(free.dataset)
    ledger.dispenser.dispense(BUYER, free.dataset, 2)
    with pytest.raises(NotController):
        ledger.dispenser.set_cap(OTHER, free.dataset, 3)
    ledger.dispenser.set_cap(OWNER, free.dataset, 3)
    assert ledger.dispenser.cap(free.dataset) == (3, 2)
    ledger.dispenser.dispense_and_order(OTHER, free.dataset, dt, 0, KEY)
    with pytest.raises(LimitExceeded, match="cap reached"):
        ledger.dispenser.dispense_and_order(MARKET, free.dataset, dt, 0, KEY)
    assert ledger.dispenser.dispensed(free.dataset, MARKET.address) == 0
    ledger.dispenser.set_cap(OWNER, free.dataset, 0)
    ledger.dispenser.dispense_and_order(MARKET, free.dataset, dt, 0, KEY)
