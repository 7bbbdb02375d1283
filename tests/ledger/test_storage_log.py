"""Storage repairs on the record, and in the dataset's audit timeline."""

from __future__ import annotations

import pytest

from datagora.audit import Kind, timeline
from datagora.ledger import Ledger, Pricing, Role, dev_account
from datagora.ledger.errors import InvalidArgument, NotAuthorized
from helpers import OTHER, OWNER, fund, h, publish


def test_repairs_are_recorded_for_the_current_manifest(ledger: Ledger) -> None:
    dataset = publish(ledger, Pricing.NONE).dataset  # manifest hash h("manifest")
    with pytest.raises(InvalidArgument):
        ledger.storage_log.record_repair(OWNER, dataset, h("another manifest"), h("p"), 3)
    with pytest.raises(InvalidArgument):
        ledger.storage_log.record_repair(OWNER, dataset, h("manifest"), h("p"), 0)
    ledger.storage_log.record_repair(OWNER, dataset, h("manifest"), h("placement 1"), 3)
    repairs = [e for e in timeline(ledger, dataset) if e.kind == Kind.REPAIR]
    assert len(repairs) == 1
    assert "3 share(s) rebuilt" in repairs[0].text and OWNER.address in repairs[0].text


def test_only_the_controller_or_a_registered_storage_node_records_a_repair(
    ledger: Ledger,
) -> None:
    """Anyone could claim repairs (issue 16): a stranger's claim is refused, a staked
    storage node's is recorded, and one that left is refused again."""
    dataset = publish(ledger, Pricing.NONE).dataset
    with pytest.raises(NotAuthorized, match="registered storage node"):
        ledger.storage_log.record_repair(OTHER, dataset, h("manifest"), h("p"), 3)
    node = dev_account(8)
    fund(ledger, node.address)
    ledger.registry.register(node, Role.PROXY, "http://proxy:1", 10**19)
    with pytest.raises(NotAuthorized):  # a proxy is not a storage node
        ledger.storage_log.record_repair(node, dataset, h("manifest"), h("p"), 3)
    ledger.registry.leave(node)
    ledger.chain.advance_time(ledger.registry.unbonding_delay())
    ledger.registry.withdraw(node)
    ledger.registry.register(node, Role.STORAGE, "http://storage:1", 10**19)
    ledger.storage_log.record_repair(node, dataset, h("manifest"), h("p"), 2)
    ledger.registry.leave(node)
    with pytest.raises(NotAuthorized):
        ledger.storage_log.record_repair(node, dataset, h("manifest"), h("p"), 1)
    repairs = [e for e in timeline(ledger, dataset) if e.kind == Kind.REPAIR]
    assert len(repairs) == 1 and node.address in repairs[0].text


def test_an_operator_the_holder_approved_records_a_repair(ledger: Ledger) -> None:
    """A stranger claiming a repair that never happened is refused by the contract;
    an operator the holder approved (like the holder) may record one."""
    dataset = publish(ledger, Pricing.NONE).dataset
    with pytest.raises(NotAuthorized):
        ledger.storage_log.record_repair(OTHER, dataset, h("manifest"), h("placement 1"), 3)
    assert not [e for e in timeline(ledger, dataset) if e.kind == Kind.REPAIR]
    assert not ledger.data_nft.may_control(dataset, OTHER.address)
    ledger.data_nft.set_operator(OWNER, OTHER.address, True)
    assert ledger.data_nft.may_control(dataset, OTHER.address)
    ledger.storage_log.record_repair(OTHER, dataset, h("manifest"), h("placement 1"), 3)
    assert len([e for e in timeline(ledger, dataset) if e.kind == Kind.REPAIR]) == 1


def test_access_log_anchors_are_in_every_timeline(ledger: Ledger) -> None:
    ledger.access_log.anchor(OTHER, h("before"), 1)  # before the dataset: not its history
    dataset = publish(ledger, Pricing.NONE).dataset
    ledger.access_log.anchor(OTHER, h("after"), 2)
    anchors = [e for e in timeline(ledger, dataset) if e.kind == Kind.ANCHOR]
    assert len(anchors) == 1 and "2 entries" in anchors[0].text


def test_holders_key_value_records_while_holding(ledger: Ledger) -> None:
    ledger.kv.set(OWNER, h("k"), h("before the dataset"))  # not while holding: left out
    dataset = publish(ledger, Pricing.NONE).dataset
    ledger.kv.set(OWNER, h("k"), h("while holding"))
    ledger.kv.set(OTHER, h("k"), h("not a holder"))
    ledger.data_nft.transfer(OWNER, dataset, OTHER.address)
    ledger.kv.remove(OTHER, h("k"))  # the new holder
    records = [e for e in timeline(ledger, dataset) if e.kind == Kind.KEY_VALUE]
    assert [(e.event, e.args["owner"], e.args["version"]) for e in records] == [
        ("KeySet", OWNER.address, 2),
        ("KeyRemoved", OTHER.address, 2),
    ]
    blocks = [e.block_number for e in timeline(ledger, dataset)]
    assert blocks == sorted(blocks)
