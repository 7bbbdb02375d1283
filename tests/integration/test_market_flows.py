"""End to end on real processes: publish → buy-and-order → download through threshold
proxy re-encryption; request → grant → download → revoke → refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datagora.crypto.keys import Identity
from datagora.errors import DatagoraError
from datagora.ledger import Pricing, dev_account
from datagora.ledger.errors import NotFound, TermsChanged
from datagora.market import Endpoints, Marketplace
from datagora.sharing.errors import AccessRefused
from datagora.testing.sharing import Network, wait_until
from datagora.testing.storage import LocalNodes

pytestmark = pytest.mark.slow

META = {
    "title": "Breast cancer cohort",
    "license": "CC-BY-4.0",
    "creator": "St. Mary's",
    "columns": [{"name": "radius", "type": "float"}, {"name": "label", "type": "int"}],
    "services": [{"id": 0, "type": "download", "price": str(10**18)}],
}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Network, LocalNodes]]:
    base = tmp_path_factory.mktemp("net")
    net = Network(base, proxies=3, threshold=2).start()
    try:
        with LocalNodes(6, base / "storage") as nodes:
            yield net, nodes
    finally:
        net.stop()


def market(net: Network, nodes: LocalNodes, who: Identity) -> Marketplace:
    return Marketplace(net.ledger, Endpoints(nodes.urls, net.proxy_urls, net.threshold), who)


def test_publish_buy_download(network: tuple[Network, LocalNodes], tmp_path: Path) -> None:
    net, nodes = network
    marker = b"PLAINTEXT-MARKER-e2e-" + os.urandom(8).hex().encode()
    data = b"radius,label\n" + b"".join(b"%d.5,%d\n" % (i, i % 2) for i in range(50_000)) + marker
    src = tmp_path / "cohort.csv"
    src.write_bytes(data)
    owner = market(net, nodes, net.owner)
    published = owner.publish(src, META, pricing=Pricing.FIXED, price=10**18, chunk_size=64 << 10)
    assert owner.read_bytes(published.dataset) == data  # the owner unwraps its own key

    consumer_id = Identity.from_private_key(bytes(dev_account(7).key))
    net.ledger.market_token.mint(dev_account(0), consumer_id.address, 10 * 10**18)
    consumer = market(net, nodes, consumer_id)
    with pytest.raises(AccessRefused):
        consumer.download(published.dataset, tmp_path / "early.csv")
    consumer.buy_and_order(published.dataset)
    wait_until(lambda: net.delegated(published.dataset, consumer_id.address), "the agent delegates")
    consumer.download(published.dataset, tmp_path / "copy.csv")
    assert (tmp_path / "copy.csv").read_bytes() == data
    # No storage node, proxy or agent holds the plaintext or the data key.
    key, _ = owner.data_key(published.dataset)
    for root in [net.base]:  # storage nodes, proxies, agent, their logs, the chain state
        for path in Path(root).rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert marker not in blob, path
                assert key.raw() not in blob and key.raw().hex().encode() not in blob, path


def test_request_grant_revoke(network: tuple[Network, LocalNodes], tmp_path: Path) -> None:
    net, nodes = network
    owner = market(net, nodes, net.owner)
    data = b"free but needs approval\n" * 1000
    src = tmp_path / "approval.csv"
    src.write_bytes(data)
    published = owner.publish(src, META | {"title": "Approval only"}, pricing=Pricing.NONE)
    researcher = market(net, nodes, Identity.from_private_key(bytes(dev_account(8).key)))
    request_id = researcher.request_access(published.dataset, "tumour classifier")
    owner.grant(request_id)
    assert researcher.read_bytes(published.dataset) == data
    owner.revoke(request_id)
    with pytest.raises(AccessRefused):
        researcher.download(published.dataset, tmp_path / "after-revoke.csv")


def test_rotate_and_update_follow_entitlement(
    network: tuple[Network, LocalNodes], tmp_path: Path
) -> None:
    net, nodes = network
    owner = market(net, nodes, net.owner)
    src = tmp_path / "v1.csv"
    src.write_bytes(b"a,b\n1,2\n" * 500)
    published = owner.publish(src, META | {"title": "Rotating"}, pricing=Pricing.FIXED, price=1)
    buyer_id = Identity.from_private_key(bytes(dev_account(9).key))
    net.ledger.market_token.mint(dev_account(0), buyer_id.address, 10**18)
    buyer = market(net, nodes, buyer_id)
    buyer.buy_and_order(published.dataset)
    wait_until(lambda: net.delegated(published.dataset, buyer_id.address), "delegation")
    assert buyer.read_bytes(published.dataset) == src.read_bytes()
    new = tmp_path / "v2.csv"
    new.write_bytes(b"a,b\n3,4\n" * 700)
    owner.rotate(published.dataset, new)  # new data key, new version
    version = net.ledger.data_nft.get_dataset(published.dataset).version
    assert version == 2
    # The buyer's order is still valid: the agent delegates the new version to them.
    wait_until(lambda: net.delegated(published.dataset, buyer_id.address, version), "re-delegation")
    assert buyer.read_bytes(published.dataset) == new.read_bytes()
    owner.update_metadata(published.dataset, META | {"title": "Rotating, described anew"})
    assert owner.metadata(published.dataset).title == "Rotating, described anew"
    wait_until(
        lambda: net.delegated(published.dataset, buyer_id.address, version + 1), "re-delegation"
    )
    assert buyer.read_bytes(published.dataset) == new.read_bytes()


def test_private_records_and_mock_data(network: tuple[Network, LocalNodes], tmp_path: Path) -> None:
    import hashlib

    from datagora.catalog.resolver import datagora_uri

    net, nodes = network
    owner = market(net, nodes, net.owner)
    records = owner.records()
    assert records.put("cohort/2026", b"small value") == 1
    big = os.urandom(40_000)  # too large for the chain: through the storage nodes
    assert records.put("cohort/2026", big) == 2
    assert owner.records().get("cohort/2026") == big  # a fresh view reads from the ledger
    assert owner.records().get("cohort/2026", 1) == b"small value"
    assert [v.version for v in owner.records().history("cohort/2026")] == [1, 2]
    other = market(net, nodes, Identity.from_private_key(bytes(dev_account(9).key)))
    with pytest.raises(DatagoraError):  # another account's namespace holds nothing here
        other.records().get("cohort/2026")

    mock_csv = b"radius,label\n1.0,0\n2.0,1\n"
    digest = owner.storage().put_blob(mock_csv, "mock data")
    src = tmp_path / "real.csv"
    src.write_bytes(b"radius,label\n9.9,1\n")
    mocked = META | {
        "title": "With mock",
        "mock": {"uri": datagora_uri(digest), "sha256": hashlib.sha256(mock_csv).hexdigest()},
    }
    published = owner.publish(src, mocked, pricing=Pricing.NONE)
    anyone = Marketplace(net.ledger, Endpoints(nodes.urls), None)
    assert anyone.mock(published.dataset) == mock_csv


def test_a_compute_only_dataset_and_the_terms_guard(
    network: tuple[Network, LocalNodes], tmp_path: Path
) -> None:
    """The chain sells what the metadata offers: a compute-only dataset has no
    download to sell. A buyer passes the validity it saw: a seller who shortens it
    before the purchase is mined is paid nothing."""
    net, nodes = network
    src = tmp_path / "rows.csv"
    src.write_bytes(b"radius,label\n1.5,1\n")
    owner = market(net, nodes, net.owner)
    compute_only = {**META, "services": [{"id": 1, "type": "compute", "price": "1"}]}
    published = owner.publish(src, compute_only, pricing=Pricing.FIXED, price=1, order_timeout=600)
    token = net.ledger.datatoken(published.dataset)
    assert (token.service_timeout(0), token.service_timeout(1)) == (0, 600)

    buyer_id = Identity.from_private_key(bytes(dev_account(8).key))
    net.ledger.market_token.mint(dev_account(0), buyer_id.address, 10)
    buyer = market(net, nodes, buyer_id)
    with pytest.raises(NotFound):
        buyer.buy_and_order(published.dataset, service_id=0)
    seen = token.terms_floor(1)
    token.set_service(net.owner.account, 1, 1)
    with pytest.raises(TermsChanged):
        buyer.buy_and_order(published.dataset, service_id=1, min_expires_at=seen)
    assert net.ledger.market_token.balance_of(buyer_id.address) == 10
    assert buyer.buy_and_order(published.dataset, service_id=1).service_id == 1
