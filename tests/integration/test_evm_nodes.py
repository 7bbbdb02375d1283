"""The market's key flows end to end on two EVM nodes, anvil and Hardhat Network:
deploy, publish, buy-and-order with a permit, download through threshold proxy
re-encryption, request → grant → download → revoke → refused, and the audit timeline
of what happened — the same client, proxies and agent on either node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from datagora.audit import Kind, timeline
from datagora.crypto.keys import Identity
from datagora.ledger import Pricing, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ledger.chainnode import ChainNode
from datagora.ledger.hardhat import Hardhat
from datagora.market import Endpoints, Marketplace
from datagora.sharing.errors import AccessRefused
from datagora.testing.sharing import Network, wait_until
from datagora.testing.storage import LocalNodes
from helpers import hardhat_or_skip

pytestmark = pytest.mark.slow

META = {
    "title": "Cohort on two nodes",
    "license": "CC-BY-4.0",
    "creator": "St. Mary's",
    "columns": [{"name": "radius", "type": "float"}, {"name": "label", "type": "int"}],
    "services": [{"id": 0, "type": "download", "price": str(10**18)}],
}


def _node(kind: str) -> ChainNode:
    return Anvil() if kind == "anvil" else Hardhat(install=hardhat_or_skip())


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNodes]:
    """Storage nodes know no chain: both EVM nodes' networks share them."""
    with LocalNodes(3, tmp_path_factory.mktemp("storage")) as nodes:
        yield nodes


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("anvil", marks=pytest.mark.anvil),
        pytest.param("hardhat", marks=pytest.mark.hardhat),
    ],
)
def network(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Network, LocalNodes]]:
    """The contracts, two proxies and the owner's agent on a fresh anvil or Hardhat node."""
    node = _node(request.param)  # a missing Hardhat skips before any process starts
    storage: LocalNodes = request.getfixturevalue("storage")
    net = Network(tmp_path_factory.mktemp(request.param), proxies=2, threshold=2, node=node)
    try:
        yield net.start(), storage
    finally:
        net.stop()


def _market(net: Network, nodes: LocalNodes, who: Identity) -> Marketplace:
    return Marketplace(net.ledger, Endpoints(nodes.urls, net.proxy_urls, net.threshold), who)


def test_publish_buy_download_and_audit(
    network: tuple[Network, LocalNodes], tmp_path: Path
) -> None:
    net, nodes = network
    data = b"radius,label\n" + b"".join(b"%d.5,%d\n" % (i, i % 2) for i in range(5_000))
    src = tmp_path / "cohort.csv"
    src.write_bytes(data)
    owner = _market(net, nodes, net.owner)
    published = owner.publish(
        src, META, pricing=Pricing.FIXED, price=10**18, chunk_size=16 << 10, k=2, n=3
    )

    consumer_id = Identity.from_private_key(bytes(dev_account(7).key))
    net.ledger.market_token.mint(dev_account(0), consumer_id.address, 10 * 10**18)
    consumer = _market(net, nodes, consumer_id)
    with pytest.raises(AccessRefused):
        consumer.download(published.dataset, tmp_path / "early.csv")
    consumer.buy_and_order(published.dataset)  # one transaction, paid through a permit
    wait_until(lambda: net.delegated(published.dataset, consumer_id.address), "the agent delegates")
    consumer.download(published.dataset, tmp_path / "copy.csv")
    assert (tmp_path / "copy.csv").read_bytes() == data
    assert net.ledger.market_token.allowance(consumer_id.address, net.ledger.exchange.address) == 0

    entries = timeline(net.ledger, published.dataset)
    kinds = [e.kind for e in entries]
    assert kinds[:2] == [Kind.HOLDER, Kind.CREATED]
    (sale,) = [e for e in entries if e.kind == Kind.SALE]
    (order,) = [e for e in entries if e.kind == Kind.ORDER]
    assert sale.args["buyer"] == order.args["consumer"] == consumer_id.address
    assert sale.tx_hash == order.tx_hash  # bought and ordered in one transaction


def test_request_grant_revoke(network: tuple[Network, LocalNodes], tmp_path: Path) -> None:
    net, nodes = network
    owner = _market(net, nodes, net.owner)
    data = b"free but needs approval\n" * 500
    src = tmp_path / "approval.csv"
    src.write_bytes(data)
    published = owner.publish(
        src, META | {"title": "Approval only"}, pricing=Pricing.NONE, k=2, n=3
    )
    researcher_id = Identity.from_private_key(bytes(dev_account(8).key))
    researcher = _market(net, nodes, researcher_id)
    request_id = researcher.request_access(published.dataset, "tumour classifier")
    owner.grant(request_id)
    assert researcher.read_bytes(published.dataset) == data
    owner.revoke(request_id)
    with pytest.raises(AccessRefused):
        researcher.download(published.dataset, tmp_path / "after-revoke.csv")
    decided = {Kind.REQUEST, Kind.GRANT, Kind.DENIAL, Kind.REVOCATION}
    kinds = [e.kind for e in timeline(net.ledger, published.dataset) if e.kind in decided]
    assert kinds == [Kind.REQUEST, Kind.GRANT, Kind.REVOCATION]
