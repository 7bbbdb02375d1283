"""Transferring a dataset's NFT is a lifecycle (issue 15, item 3), on the embedded chain
and on anvil: the dataset awaits its re-key (nothing sells, nothing is served, no token
moves), the old holder's compute roles end, access lists and paid orders carry over, and
the new holder's re-key (a new version) makes it sell and serve again."""

from __future__ import annotations

import pytest

from datagora.ledger import DatasetState, JobStatus, Ledger, ListKind, Pricing
from datagora.ledger.errors import InvalidState, NotController
from helpers import BUYER, MARKET, OTHER, OWNER, fund, h, publish

KEY = b"\x03" + bytes(range(32))
NEW_OWNER = MARKET


def money(ledger: Ledger) -> tuple[int, int, int]:
    mt = ledger.market_token
    return tuple(mt.balance_of(a.address) for a in (BUYER, OWNER, NEW_OWNER))  # type: ignore[return-value]


def test_a_transferred_dataset_sells_nothing_until_the_new_holder_rekeys(ledger: Ledger) -> None:
    pub = publish(ledger)
    d, dt = pub.dataset, ledger.datatoken(pub.dataset)
    fund(ledger, BUYER.address)
    ledger.exchange.buy_and_order(BUYER, d, dt, 0, KEY)
    assert dt.has_valid_order(BUYER.address, 0)
    ledger.data_nft.transfer(OWNER, d, NEW_OWNER.address)
    info = ledger.data_nft.get_dataset(d)
    assert (info.controller, info.state) == (NEW_OWNER.address, DatasetState.AWAITING_REKEY)
    assert ledger.data_nft.transfer_epoch(d) == 1
    # Nobody pays for what nobody can deliver: the key is still the old holder's.
    before = money(ledger)
    with pytest.raises(InvalidState, match="not active"):
        ledger.exchange.buy_and_order(BUYER, d, dt, 0, KEY)
    assert money(ledger) == before
    assert not dt.has_valid_order(BUYER.address, 0)  # paid orders pause
    # The new holder cannot skip the re-key: no activation, no metadata-only version.
    with pytest.raises(InvalidState, match="re-key"):
        ledger.data_nft.set_state(NEW_OWNER, d, DatasetState.ACTIVE)
    with pytest.raises(InvalidState, match="re-key"):
        ledger.data_nft.set_state(NEW_OWNER, d, DatasetState.DISABLED)
    with pytest.raises(InvalidState, match="re-key"):
        ledger.data_nft.update(NEW_OWNER, d, h("meta v2"), "https://example.org/v2.json")
    with pytest.raises(InvalidState, match="re-key"):  # the same manifest is no re-key
        ledger.data_nft.update(NEW_OWNER, d, h("meta v2"), "u", h("manifest"), h("root 2"))
    with pytest.raises(NotController):  # and the old holder has nothing left to say
        ledger.data_nft.update(OWNER, d, h("meta v2"), "u", h("manifest 2"), h("root 2"))
    ledger.data_nft.update(NEW_OWNER, d, h("meta v2"), "u", h("manifest 2"), h("root 2"))
    info = ledger.data_nft.get_dataset(d)
    assert (info.state, info.version) == (DatasetState.ACTIVE, 2)
    # It serves again: the paid order (its expiry unchanged) and new sales, to the new holder.
    assert dt.has_valid_order(BUYER.address, 0)
    new0 = ledger.market_token.balance_of(NEW_OWNER.address)
    ledger.exchange.buy_and_order(BUYER, d, dt, 0, KEY)
    assert ledger.market_token.balance_of(NEW_OWNER.address) > new0


def test_the_old_holders_compute_roles_end_with_the_transfer(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE, service_id=1)
    d, dt = pub.dataset, ledger.datatoken(pub.dataset)
    ledger.compute.set_operator(OWNER, d, OTHER.address, True)
    ledger.compute.set_trusted(OWNER, d, h("algo"), True)
    ledger.compute.set_job_terms(OWNER, d, 10**18, 3600)
    dt.mint(OWNER, BUYER.address, 2)
    dt.order(BUYER, 1, KEY)
    ledger.data_nft.transfer(OWNER, d, NEW_OWNER.address)
    assert not ledger.compute.is_operator(d, OTHER.address)
    assert not ledger.compute.is_trusted(d, h("algo"))
    ledger.data_nft.update(NEW_OWNER, d, h("meta v2"), "u", h("manifest 2"), h("root 2"))
    # The old holder's node may no longer record jobs, and its trust does not approve them.
    with pytest.raises(NotController):
        ledger.compute.record_job(OTHER, d, 2, 1, BUYER.address, h("algo"), h("p"))
    with pytest.raises(NotController):
        ledger.compute.set_operator(OWNER, d, OTHER.address, True)
    job, _ = ledger.compute.record_job(NEW_OWNER, d, 2, 1, BUYER.address, h("algo"), h("p"))
    assert ledger.compute.job(job).status == JobStatus.PENDING  # the new holder reviews
    # The new holder names its own.
    ledger.compute.set_trusted(NEW_OWNER, d, h("algo"), True)
    ledger.compute.set_operator(NEW_OWNER, d, OTHER.address, True)
    job, _ = ledger.compute.record_job(OTHER, d, 2, 1, BUYER.address, h("algo"), h("p"))
    assert ledger.compute.job(job).status == JobStatus.APPROVED
    # The per-job price carries over (like the exchange price); its payments go to the holder.
    assert ledger.compute.job_terms(d) == (10**18, 3600)


def test_access_lists_carry_over_and_grants_pause_until_the_rekey(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE)
    d = pub.dataset
    ledger.access.set_list(OWNER, d, OTHER.address, ListKind.DENY)
    request_id, _ = ledger.access.request(BUYER, d, "research", KEY)
    ledger.access.grant(OWNER, request_id, ledger.chain.timestamp() + 86_400)
    assert ledger.access.has_access(d, BUYER.address)
    ledger.data_nft.transfer(OWNER, d, NEW_OWNER.address)
    assert not ledger.access.has_access(d, BUYER.address)  # paused
    ledger.data_nft.update(NEW_OWNER, d, h("meta v2"), "u", h("manifest 2"), h("root 2"))
    assert ledger.access.has_access(d, BUYER.address)  # a grant is the consumer's now
    assert ledger.access.list_of(d, OTHER.address) == ListKind.DENY  # still protected
    ledger.access.revoke(NEW_OWNER, request_id)  # which the new holder may end
    assert not ledger.access.has_access(d, BUYER.address)


def test_retired_stays_retired_and_a_transfer_to_oneself_changes_nothing(ledger: Ledger) -> None:
    d = publish(ledger).dataset
    ledger.data_nft.transfer(OWNER, d, OWNER.address)
    assert ledger.data_nft.get_dataset(d).state == DatasetState.ACTIVE
    assert ledger.data_nft.transfer_epoch(d) == 0
    ledger.data_nft.set_state(OWNER, d, DatasetState.RETIRED)
    ledger.data_nft.transfer(OWNER, d, NEW_OWNER.address)
    assert ledger.data_nft.get_dataset(d).state == DatasetState.RETIRED
    with pytest.raises(InvalidState, match="retired"):
        ledger.data_nft.update(NEW_OWNER, d, h("m"), "u", h("manifest 2"), h("root 2"))


def test_safe_transfer_and_an_approved_operator_start_the_same_lifecycle(ledger: Ledger) -> None:
    d = publish(ledger).dataset
    nft = ledger.data_nft
    ledger.chain.transact(OWNER, nft.prepare("approve", OTHER.address, d), "DataNFT.approve")
    ledger.chain.transact(
        OTHER,
        nft.prepare("safeTransferFrom", OWNER.address, NEW_OWNER.address, d),
        "DataNFT.safeTransferFrom",
    )
    info = nft.get_dataset(d)
    assert (info.controller, info.state) == (NEW_OWNER.address, DatasetState.AWAITING_REKEY)
    # The retiring way out stays open to the new holder.
    nft.set_state(NEW_OWNER, d, DatasetState.RETIRED)


def test_one_consumers_orders_and_a_datasets_transfers_are_found_by_topic(
    ledger: Ledger,
) -> None:
    """The re-key and the compute client find their events through indexed topics: the
    node returns only the consumer's orders of this dataset, never every event."""
    pub = publish(ledger)
    other = publish(ledger)
    dt = ledger.datatoken(pub.dataset)
    fund(ledger, BUYER.address)
    fund(ledger, OTHER.address)
    mine = ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, KEY)
    ledger.exchange.buy_and_order(OTHER, pub.dataset, dt, 0, KEY)
    ledger.exchange.buy_and_order(BUYER, other.dataset, ledger.datatoken(other.dataset), 0, KEY)
    start = ledger.deployment.start_block
    found = dt.find_events("OrderStarted", pub.dataset, BUYER.address, start=start)
    assert [e.tx_hash for e in found] == [mine.tx.tx_hash]
    assert found[0]["consumer"] == BUYER.address and found[0]["expires_at"] == mine.expires_at
    ledger.data_nft.transfer(OWNER, pub.dataset, NEW_OWNER.address)
    moves = ledger.data_nft.find_events("DatasetTransferred", pub.dataset, start=start)
    assert [(e["previous"], e["holder"], e["epoch"]) for e in moves] == [
        (OWNER.address, NEW_OWNER.address, 1)
    ]
    assert ledger.data_nft.find_events("DatasetTransferred", other.dataset, start=start) == []
