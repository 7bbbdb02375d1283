"""Contract behaviour through the typed client, on the embedded chain and on anvil."""

from __future__ import annotations

import pytest

from datagora.ledger import (
    DatasetState,
    Ledger,
    ListKind,
    Pricing,
    PublishParams,
    RequestStatus,
)
from datagora.ledger.errors import (
    InsufficientFunds,
    InvalidArgument,
    InvalidState,
    LimitExceeded,
    NoDatatoken,
    NotAuthorized,
    NotController,
    NotFound,
    OrderExpired,
    PriceAboveMaximum,
    SignatureError,
)
from helpers import BUYER, DEPLOYER, MARKET, OTHER, OWNER, PRICE, fund, h, publish

KEY = b"\x03" + bytes(range(32))


# -- publishing -------------------------------------------------------------------------


def test_publish_records_everything_in_one_transaction(ledger: Ledger) -> None:
    before = ledger.chain.w3.eth.get_transaction_count(OWNER.address)
    pub = publish(ledger)
    assert ledger.chain.w3.eth.get_transaction_count(OWNER.address) == before + 1
    info = ledger.data_nft.get_dataset(pub.dataset)
    assert info.controller == OWNER.address
    assert info.datatoken == pub.datatoken
    assert info.version == 1
    assert info.state == DatasetState.ACTIVE
    assert info.metadata_hash == h("metadata")
    assert info.manifest_hash == h("manifest")
    assert info.merkle_root == h("root")
    assert info.metadata_uri == "https://example.org/meta.json"
    assert ledger.data_nft.token_uri(pub.dataset) == info.metadata_uri
    assert ledger.exchange.price(pub.dataset) == PRICE
    assert ledger.exchange.market_fee(pub.dataset) == (100, MARKET.address)
    dt = ledger.datatoken(pub.dataset)
    assert dt.dataset() == pub.dataset
    assert dt.name() == f"datagora dataset #{pub.dataset}"
    assert dt.symbol() == f"DT{pub.dataset}"
    assert dt.service_timeout(0) == 86_400
    assert ledger.data_nft.dataset_count() == pub.dataset


def test_dataset_ids_are_sequential_and_datatokens_distinct(ledger: Ledger) -> None:
    a, b = publish(ledger), publish(ledger, Pricing.NONE)
    assert b.dataset == a.dataset + 1
    assert a.datatoken != b.datatoken
    assert ledger.exchange.price(b.dataset) == 0


def test_update_makes_a_new_version_with_old_and_new_hashes(ledger: Ledger) -> None:
    pub = publish(ledger)
    tx = ledger.data_nft.update(OWNER, pub.dataset, h("meta2"), "ipfs://v2", h("man2"), h("root2"))
    info = ledger.data_nft.get_dataset(pub.dataset)
    assert (info.version, info.metadata_hash, info.metadata_uri) == (2, h("meta2"), "ipfs://v2")
    (ev,) = [
        e for e in ledger.events(tx.block_number, tx.block_number) if e.name == "DatasetUpdated"
    ]
    assert ev["old_metadata_hash"] == h("metadata") and ev["new_metadata_hash"] == h("meta2")
    assert ev["old_merkle_root"] == h("root") and ev["new_merkle_root"] == h("root2")
    assert ev["version"] == 2


def test_only_the_controller_updates_and_transfer_moves_control(ledger: Ledger) -> None:
    pub = publish(ledger)
    with pytest.raises(NotController):
        ledger.data_nft.update(OTHER, pub.dataset, h("x"), "")
    ledger.data_nft.transfer(OWNER, pub.dataset, OTHER.address)
    assert ledger.data_nft.controller(pub.dataset) == OTHER.address
    ledger.data_nft.update(OTHER, pub.dataset, h("x"), "", h("manifest 2"), h("root 2"))
    with pytest.raises(NotController):
        ledger.data_nft.update(OWNER, pub.dataset, h("y"), "")
    assert ledger.data_nft.get_dataset(pub.dataset).metadata_hash == h("x")


def test_new_controller_is_paid(ledger: Ledger) -> None:
    pub = publish(ledger, market_fee_bps=0)
    ledger.exchange.propose_protocol_fee(DEPLOYER, 0, DEPLOYER.address)
    ledger.chain.advance_time(ledger.exchange.protocol_fee_delay())
    ledger.exchange.apply_protocol_fee(DEPLOYER)
    ledger.data_nft.transfer(OWNER, pub.dataset, OTHER.address)
    ledger.data_nft.update(OTHER, pub.dataset, h("v2"), "", h("manifest 2"), h("root 2"))
    fund(ledger, BUYER.address)
    before = ledger.market_token.balance_of(OTHER.address)
    ledger.exchange.buy_and_order(BUYER, pub.dataset, ledger.datatoken(pub.dataset))
    assert ledger.market_token.balance_of(OTHER.address) == before + PRICE


def test_retired_is_final_and_disabled_blocks_sales(ledger: Ledger) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    ledger.data_nft.set_state(OWNER, pub.dataset, DatasetState.DISABLED)
    with pytest.raises(InvalidState):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, dt)
    ledger.data_nft.set_state(OWNER, pub.dataset, DatasetState.RETIRED)
    with pytest.raises(InvalidState):
        ledger.data_nft.set_state(OWNER, pub.dataset, DatasetState.ACTIVE)
    with pytest.raises(InvalidState):
        ledger.data_nft.update(OWNER, pub.dataset, h("x"), "")


def test_publish_bad_input_is_refused_before_sending(ledger: Ledger) -> None:
    count = ledger.data_nft.dataset_count()
    with pytest.raises(InvalidArgument):
        publish(ledger, metadata_hash=bytes(32))
    with pytest.raises(InvalidArgument):
        publish(ledger, metadata_hash=b"short")
    with pytest.raises(InvalidArgument):
        publish(ledger, price=0)
    with pytest.raises(InvalidArgument):
        publish(ledger, metadata_uri="x" * 433)
    with pytest.raises(LimitExceeded):
        publish(ledger, market_fee_bps=1_001)
    with pytest.raises(InvalidArgument):
        publish(ledger, market_fee_recipient="0x" + "00" * 20)
    assert ledger.data_nft.dataset_count() == count


def test_only_the_factory_mints_datasets(ledger: Ledger) -> None:
    with pytest.raises(NotAuthorized):
        ledger.chain.transact(
            DEPLOYER,
            ledger.data_nft.prepare(
                "mint_dataset", DEPLOYER.address, DEPLOYER.address, h("m"), "", h("a"), h("b")
            ),
            "mint",
        )


# -- buying and ordering ----------------------------------------------------------------


def test_buy_and_order_pays_everyone_and_records_the_order(ledger: Ledger) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    q = ledger.exchange.quote(pub.dataset)
    bps, protocol = ledger.exchange.protocol_fee()
    assert q.total == PRICE
    assert q.market_fee == PRICE * 100 // 10_000
    assert q.protocol_fee == PRICE * bps // 10_000
    balances = {
        a: ledger.market_token.balance_of(a)
        for a in (BUYER.address, OWNER.address, MARKET.address, protocol)
    }
    nonce = ledger.chain.w3.eth.get_transaction_count(BUYER.address)
    order = ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert ledger.chain.w3.eth.get_transaction_count(BUYER.address) == nonce + 1
    mt = ledger.market_token
    assert mt.balance_of(BUYER.address) == balances[BUYER.address] - PRICE
    assert mt.balance_of(OWNER.address) == balances[OWNER.address] + q.publisher_amount
    assert mt.balance_of(MARKET.address) == balances[MARKET.address] + q.market_fee
    assert mt.balance_of(protocol) == balances[protocol] + q.protocol_fee
    assert (order.consumer, order.payer, order.consumer_key) == (BUYER.address, BUYER.address, KEY)
    assert order.expires_at == ledger.chain.timestamp() + 86_400
    assert dt.require_valid_order(BUYER.address, 0) == order.expires_at
    assert dt.total_supply() == 0 and dt.balance_of(BUYER.address) == 0
    assert mt.allowance(BUYER.address, ledger.exchange.address) == 0


def test_price_above_maximum_is_refused_and_nothing_changes(ledger: Ledger) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    dt = ledger.datatoken(pub.dataset)
    ledger.exchange.set_price(OWNER, pub.dataset, 2 * PRICE)
    before = ledger.market_token.balance_of(BUYER.address)
    with pytest.raises(PriceAboveMaximum):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, max_price=PRICE)
    assert ledger.market_token.balance_of(BUYER.address) == before
    assert not dt.has_valid_order(BUYER.address, 0)


def test_buy_without_funds_or_allowance_is_refused(ledger: Ledger) -> None:
    pub = publish(ledger)
    with pytest.raises(InsufficientFunds):
        ledger.exchange.buy_and_order(BUYER, pub.dataset, ledger.datatoken(pub.dataset))
    fund(ledger, BUYER.address)
    with pytest.raises(InsufficientFunds):
        ledger.exchange.buy(BUYER, pub.dataset, 1, PRICE)  # no approve, no permit


def test_expired_permit_is_refused(ledger: Ledger) -> None:
    pub = publish(ledger)
    fund(ledger, BUYER.address)
    permit = ledger.market_token.sign_permit(
        BUYER, ledger.exchange.address, PRICE, ledger.chain.timestamp() - 1
    )
    with pytest.raises(SignatureError):
        ledger.market_token.permit(BUYER, permit)
    # Through the exchange, a failed permit leaves no allowance, so payment fails.
    with pytest.raises(InsufficientFunds):
        ledger.exchange.buy_and_order(
            BUYER,
            pub.dataset,
            ledger.datatoken(pub.dataset),
            permit_deadline=ledger.chain.timestamp() - 1,
        )


def test_permit_signed_by_another_account_is_refused(ledger: Ledger) -> None:
    fund(ledger, BUYER.address)
    permit = ledger.market_token.sign_permit(
        OTHER, ledger.exchange.address, PRICE, ledger.chain.timestamp() + 600
    )
    forged = type(permit)(
        BUYER.address, permit.spender, permit.amount, permit.deadline, permit.v, permit.r, permit.s
    )
    with pytest.raises(SignatureError):
        ledger.market_token.permit(OTHER, forged)
    assert ledger.market_token.allowance(BUYER.address, ledger.exchange.address) == 0


def test_order_spends_exactly_one_datatoken(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    dt = ledger.datatoken(pub.dataset)
    dt.mint(OWNER, BUYER.address, 3)
    order = dt.order(BUYER, 0, KEY)
    assert dt.balance_of(BUYER.address) == 2 and dt.total_supply() == 2
    assert order.payer == BUYER.address
    gift = dt.order(BUYER, 0, KEY, consumer=OTHER.address)
    assert (gift.consumer, gift.payer) == (OTHER.address, BUYER.address)
    assert dt.has_valid_order(OTHER.address, 0)
    assert dt.balance_of(BUYER.address) == 1


def test_order_without_datatoken_or_service_is_refused(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    dt = ledger.datatoken(pub.dataset)
    with pytest.raises(NoDatatoken):
        dt.order(BUYER, 0, KEY)
    dt.mint(OWNER, BUYER.address, 1)
    with pytest.raises(NotFound):
        dt.order(BUYER, 7, KEY)
    with pytest.raises(InvalidArgument):
        dt.order(BUYER, 0, b"k" * 129)
    assert dt.balance_of(BUYER.address) == 1


def test_order_expires(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE, order_timeout=600)
    dt = ledger.datatoken(pub.dataset)
    with pytest.raises(NoDatatoken):
        dt.require_valid_order(BUYER.address, 0)
    dt.mint(OWNER, BUYER.address, 1)
    dt.order(BUYER, 0, KEY)
    assert dt.has_valid_order(BUYER.address, 0)
    ledger.chain.advance_time(601)
    assert not dt.has_valid_order(BUYER.address, 0)
    with pytest.raises(OrderExpired):
        dt.require_valid_order(BUYER.address, 0)


def test_services_are_set_by_the_controller(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    dt = ledger.datatoken(pub.dataset)
    with pytest.raises(NotController):
        dt.set_service(OTHER, 1, 3600)
    with pytest.raises(NotController):
        dt.mint(OTHER, OTHER.address, 1)
    dt.set_service(OWNER, 1, 3600)
    dt.mint(OWNER, BUYER.address, 1)
    assert dt.order(BUYER, 1, KEY).service_id == 1


def test_an_order_for_one_dataset_is_not_valid_for_another(ledger: Ledger) -> None:
    a, b = publish(ledger), publish(ledger)
    fund(ledger, BUYER.address)
    ledger.exchange.buy_and_order(BUYER, a.dataset, ledger.datatoken(a.dataset))
    assert ledger.datatoken(a.dataset).has_valid_order(BUYER.address, 0)
    assert not ledger.datatoken(b.dataset).has_valid_order(BUYER.address, 0)


def test_template_and_foreign_clones_cannot_be_initialised(ledger: Ledger) -> None:
    template = ledger.deployment.address("Datatoken")
    dt = ledger.datatoken(publish(ledger).dataset)
    for target in (template, dt.address):
        with pytest.raises(InvalidState):
            ledger.chain.transact(
                OTHER, {"to": target, "data": dt.prepare("initialize", 1, 0, 1)["data"]}, "init"
            )


def test_market_order_is_reserved_for_market_contracts(ledger: Ledger) -> None:
    pub = publish(ledger)
    dt = ledger.datatoken(pub.dataset)
    with pytest.raises(NotAuthorized):
        ledger.chain.transact(
            OTHER, dt.prepare("market_order", OTHER.address, pub.dataset, 0, b"", 0), "x"
        )
    assert not dt.has_valid_order(OTHER.address, 0)


def test_fee_bounds(ledger: Ledger) -> None:
    with pytest.raises(LimitExceeded):
        ledger.exchange.propose_protocol_fee(
            DEPLOYER, ledger.exchange.max_protocol_fee_bps() + 1, OTHER.address
        )
    with pytest.raises(NotAuthorized):
        ledger.exchange.propose_protocol_fee(OTHER, 1, OTHER.address)
    ledger.exchange.propose_protocol_fee(
        DEPLOYER, ledger.exchange.max_protocol_fee_bps(), OTHER.address
    )
    ledger.chain.advance_time(ledger.exchange.protocol_fee_delay())
    ledger.exchange.apply_protocol_fee(OTHER)
    assert ledger.exchange.protocol_fee() == (ledger.exchange.max_protocol_fee_bps(), OTHER.address)


# -- dispenser ---------------------------------------------------------------------------


def test_dispenser_limits_per_address(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.FREE)
    dt = ledger.datatoken(pub.dataset)
    order = ledger.dispenser.dispense_and_order(BUYER, pub.dataset, dt, 0, KEY)
    assert order.consumer == BUYER.address and dt.total_supply() == 0
    ledger.dispenser.dispense(BUYER, pub.dataset, 1)
    assert dt.balance_of(BUYER.address) == 1
    with pytest.raises(LimitExceeded):
        ledger.dispenser.dispense(BUYER, pub.dataset, 1)
    assert ledger.dispenser.dispensed(pub.dataset, BUYER.address) == 2
    ledger.dispenser.dispense(OTHER, pub.dataset, 2)
    with pytest.raises(NotController):
        ledger.dispenser.configure(OTHER, pub.dataset, 5, True)
    ledger.dispenser.configure(OWNER, pub.dataset, 5, False)
    with pytest.raises(NotFound):
        ledger.dispenser.dispense(OTHER, pub.dataset, 1)


# -- access registry ---------------------------------------------------------------------


def test_request_grant_revoke(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    rid, _ = ledger.access.request(BUYER, pub.dataset, "cancer research", KEY)
    req = ledger.access.get_request(rid)
    assert (req.dataset, req.consumer, req.status) == (
        pub.dataset,
        BUYER.address,
        RequestStatus.PENDING,
    )
    assert not ledger.access.has_access(pub.dataset, BUYER.address)
    with pytest.raises(NotController):
        ledger.access.grant(OTHER, rid, ledger.chain.timestamp() + 3600)
    with pytest.raises(OrderExpired):
        ledger.access.grant(OWNER, rid, ledger.chain.timestamp() - 1)
    ledger.access.grant(OWNER, rid, ledger.chain.timestamp() + 3600)
    assert ledger.access.has_access(pub.dataset, BUYER.address)
    with pytest.raises(InvalidState):
        ledger.access.grant(OWNER, rid, ledger.chain.timestamp() + 7200)
    with pytest.raises(NotController):
        ledger.access.revoke(OTHER, rid)
    ledger.access.revoke(OWNER, rid)
    assert not ledger.access.has_access(pub.dataset, BUYER.address)
    assert ledger.access.get_request(rid).status == RequestStatus.REVOKED
    with pytest.raises(InvalidState):
        ledger.access.revoke(OWNER, rid)
    with pytest.raises(InvalidState):
        ledger.access.grant(OWNER, rid, ledger.chain.timestamp() + 3600)
    # The latest request per dataset and consumer is a view (no log scan to explain).
    assert ledger.access.latest_request(pub.dataset, BUYER.address) == rid
    again, _ = ledger.access.request(BUYER, pub.dataset, "second try", KEY)
    assert again > rid and ledger.access.latest_request(pub.dataset, BUYER.address) == again
    assert ledger.access.latest_request(pub.dataset, OTHER.address) == 0


def test_grants_expire(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    rid, _ = ledger.access.request(BUYER, pub.dataset, "p", KEY)
    ledger.access.grant(OWNER, rid, ledger.chain.timestamp() + 100)
    assert ledger.access.has_access(pub.dataset, BUYER.address)
    ledger.chain.advance_time(101)
    assert not ledger.access.has_access(pub.dataset, BUYER.address)


def test_deny_with_reason(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    rid, _ = ledger.access.request(BUYER, pub.dataset, "p", KEY)
    tx = ledger.access.deny(OWNER, rid, "purpose not covered by consent")
    (ev,) = [e for e in ledger.events(tx.block_number, tx.block_number) if e.name == "AccessDenied"]
    assert ev["reason"] == "purpose not covered by consent"
    assert ledger.access.get_request(rid).status == RequestStatus.DENIED
    with pytest.raises(InvalidState):
        ledger.access.grant(OWNER, rid, ledger.chain.timestamp() + 60)


def test_allow_and_deny_lists(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    with pytest.raises(NotController):
        ledger.access.set_list(OTHER, pub.dataset, BUYER.address, ListKind.ALLOW)
    ledger.access.set_list(OWNER, pub.dataset, BUYER.address, ListKind.ALLOW)
    assert ledger.access.has_access(pub.dataset, BUYER.address)
    rid, _ = ledger.access.request(OTHER, pub.dataset, "p", KEY)
    ledger.access.set_list(OWNER, pub.dataset, OTHER.address, ListKind.DENY)
    with pytest.raises(InvalidState):
        ledger.access.request(OTHER, pub.dataset, "again", KEY)
    with pytest.raises(InvalidState):
        ledger.access.grant(OWNER, rid, ledger.chain.timestamp() + 60)
    assert ledger.access.list_of(pub.dataset, OTHER.address) == ListKind.DENY
    with pytest.raises(NotFound):
        ledger.access.get_request(999)


def test_requests_need_an_active_dataset(ledger: Ledger) -> None:
    with pytest.raises(InvalidState):
        ledger.access.request(BUYER, 12345, "p", KEY)
    with pytest.raises(InvalidArgument):
        ledger.access.request(BUYER, 1, "p" * 257, KEY)


# -- key/value and ciphertext records ----------------------------------------------------


def test_key_value_records_are_owner_namespaced_and_versioned(ledger: Ledger) -> None:
    key = h("patients/2026")
    v1, _ = ledger.kv.set(OWNER, key, h("value 1"))
    v2, _ = ledger.kv.set(OWNER, key, h("value 2"))
    assert (v1, v2) == (1, 2)
    rec = ledger.kv.get(OWNER.address, key)
    assert (rec.content_hash, rec.version, rec.exists) == (h("value 2"), 2, True)
    assert not ledger.kv.get(OTHER.address, key).exists  # another owner's namespace
    ledger.kv.set(OTHER, key, h("theirs"))
    assert ledger.kv.get(OWNER.address, key).content_hash == h("value 2")
    v3, _tx = ledger.kv.remove(OWNER, key)
    assert v3 == 3 and not ledger.kv.get(OWNER.address, key).exists
    with pytest.raises(NotFound):
        ledger.kv.remove(OWNER, key)
    with pytest.raises(InvalidArgument):
        ledger.kv.set(OWNER, key, bytes(32))
    history = [
        e for e in ledger.events() if e.contract == "KeyValueStore" and e["owner"] == OWNER.address
    ]
    assert [(e.name, e["version"]) for e in history] == [
        ("KeySet", 1),
        ("KeySet", 2),
        ("KeyRemoved", 3),
    ]


def test_ciphertext_records(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    blob = bytes(range(256)) * 4
    rec = ledger.ciphertexts.store(OWNER, blob, pub.dataset, h("k"))
    import hashlib

    assert rec.ciphertext_sha256 == hashlib.sha256(blob).digest()
    assert ledger.ciphertexts.record_hash(rec.record_id) == rec.ciphertext_sha256
    (ev,) = [
        e
        for e in ledger.events(rec.tx.block_number, rec.tx.block_number)
        if e.name == "RecordStored"
    ]
    assert ev["ciphertext"] == blob
    with pytest.raises(NotController):
        ledger.ciphertexts.store(OTHER, blob, pub.dataset)
    count = ledger.ciphertexts.record_count()
    with pytest.raises(LimitExceeded):
        ledger.ciphertexts.store(OWNER, b"x" * 24_577)
    with pytest.raises(InvalidArgument):
        ledger.ciphertexts.store(OWNER, b"")
    assert ledger.ciphertexts.record_count() == count
    ledger.ciphertexts.store(OTHER, b"y" * 24_576)  # the cap itself fits


def test_oversized_ciphertext_is_refused_on_chain_too(ledger: Ledger) -> None:
    # Bypass the client's check: the contract's ABI decoder refuses it as well.
    from datagora.ledger.errors import ContractRuleError

    tx = ledger.ciphertexts.prepare("store", 0, bytes(32), b"x" * 24_577)
    with pytest.raises(ContractRuleError):
        ledger.chain.transact(OWNER, tx, "store")
    assert ledger.ciphertexts.record_count() == 0


# -- zero addresses ------------------------------------------------------------------------


def test_zero_address_is_refused(ledger: Ledger) -> None:
    zero = "0x" + "00" * 20
    pub = publish(ledger, Pricing.NONE)
    with pytest.raises(InvalidArgument):
        ledger.data_nft.transfer(OWNER, pub.dataset, zero)
    with pytest.raises(InvalidArgument):
        ledger.datatoken(pub.dataset).mint(OWNER, zero, 1)
    with pytest.raises(InvalidArgument):
        ledger.access.set_list(OWNER, pub.dataset, zero, ListKind.DENY)
    with pytest.raises(InvalidArgument):
        ledger.factory.publish(
            OWNER,
            PublishParams(metadata_hash=h("m"), pricing=Pricing.FIXED, price=1, market_fee_bps=5),
        )


# -- access-log anchors ------------------------------------------------------------------


def test_access_log_anchors_must_grow(ledger: Ledger) -> None:
    seq, _ = ledger.access_log.anchor(OTHER, h("log after 3"), 3)
    assert seq == 1
    latest = ledger.access_log.latest(OTHER.address)
    assert (latest.digest, latest.entries) == (h("log after 3"), 3)
    with pytest.raises(InvalidArgument):
        ledger.access_log.anchor(OTHER, h("rewritten"), 3)
    with pytest.raises(InvalidArgument):
        ledger.access_log.anchor(OTHER, bytes(32), 4)
    assert ledger.access_log.anchor(OTHER, h("log after 5"), 5)[0] == 2
    assert ledger.access_log.anchor_count(BUYER.address) == 0


def test_any_live_grant_gives_access(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    far = ledger.chain.timestamp() + 10_000
    older, _ = ledger.access.request(BUYER, pub.dataset, "first", KEY)
    ledger.access.grant(OWNER, older, far)
    newer, _ = ledger.access.request(BUYER, pub.dataset, "second", KEY)
    ledger.access.grant(OWNER, newer, far)
    assert ledger.access.live_grants(pub.dataset, BUYER.address) == [older, newer]
    ledger.access.revoke(OWNER, newer)
    assert ledger.access.has_access(pub.dataset, BUYER.address)  # the older one still holds
    ledger.access.revoke(OWNER, older)
    assert not ledger.access.has_access(pub.dataset, BUYER.address)
    assert ledger.access.live_grants(pub.dataset, BUYER.address) == []


def test_live_grants_are_bounded(embedded_ledger: Ledger) -> None:
    ledger = embedded_ledger
    pub = publish(ledger, Pricing.NONE)
    far = ledger.chain.timestamp() + 10_000
    ids = []
    for i in range(8):
        rid, _ = ledger.access.request(BUYER, pub.dataset, f"p{i}", KEY)
        ledger.access.grant(OWNER, rid, far)
        ids.append(rid)
    extra, _ = ledger.access.request(BUYER, pub.dataset, "ninth", KEY)
    with pytest.raises(LimitExceeded):
        ledger.access.grant(OWNER, extra, far)
    ledger.access.revoke(OWNER, ids[0])  # a revoked grant frees its place
    ledger.access.grant(OWNER, extra, far)
    assert ledger.access.has_access(pub.dataset, BUYER.address)
