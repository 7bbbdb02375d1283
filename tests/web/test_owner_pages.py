"""The owner's and the node's storage pages, and the order look-up of the page's compute
form, against the embedded chain: a real deal (nodes that join, prove, miss), a live
storage node and a dead one in the NodeRegistry, a real catalog and the web app over
HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datagora.catalog.api import create_catalog_app
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.ledger import Ledger, Role
from datagora.node.apps import storage_app
from datagora.node.inprocess import ThreadServer
from datagora.web.app import WebConfig, create_web_app
from deals_helpers import NODES, PRICE, mine_to, open_deal, setup, terms
from helpers import BUYER, OTHER, OWNER, fund, publish


@pytest.fixture
def served(embedded_ledger: Ledger, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A live storage node (registered as NODES[0]), a catalog and a web node."""
    node = ThreadServer(lambda: storage_app(tmp_path / "node0", 1 << 20), "storage").start()
    fund(embedded_ledger, NODES[0].address)
    embedded_ledger.registry.register(NODES[0], Role.STORAGE, node.url, 10**19)
    db = Database(f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog = ThreadServer(
        lambda: create_catalog_app(Indexer(embedded_ledger, db), 0.1), "catalog"
    ).start()
    web = ThreadServer(
        lambda: create_web_app(
            WebConfig(catalog=catalog.url, ledger_factory=lambda: embedded_ledger)
        ),
        "web",
    ).start()
    try:
        yield {"web": web.url, "node": node.url}
    finally:
        web.stop()
        catalog.stop()
        node.stop()
        db.engine.dispose()


def _page(served: dict[str, str], address: str) -> str:
    r = httpx.get(f"{served['web']}/account", params={"address": address}, timeout=60)
    assert r.status_code == 200, r.text
    return r.text


def _cells(page: str, row_class: str) -> list[list[str]]:
    rows = page.split(f'<tr class="{row_class}">')[1:]
    return [[c.split("</td>")[0] for c in row.split("</tr>")[0].split("<td")[1:]] for row in rows]


def _a_deal(embedded_ledger: Ledger) -> int:
    """A deal of three nodes: node 0 proves period 0, node 1 misses it (reported),
    node 2 never joins; period 1 then passes with nobody proving or reporting."""
    s = setup(embedded_ledger)
    deal = open_deal(s, terms())
    for prover in s.provers[:2]:
        prover.join(deal)  # node 2 never joins
    info = s.deals.deal(deal)
    mine_to(embedded_ledger, info.seed_block(0) + 1)
    s.provers[0].prove(deal, 0)  # node 1 lets period 0 pass: reported below
    mine_to(embedded_ledger, info.window_end(0))
    s.deals.slash_missed(OTHER, deal, NODES[1].address, 0)
    mine_to(embedded_ledger, info.window_end(1))  # period 1: nobody proves, nobody reports
    return deal


def test_the_owner_sees_each_deal_per_node_and_the_nodes_health(
    embedded_ledger: Ledger, served: dict[str, str]
) -> None:
    deal = _a_deal(embedded_ledger)
    page = _page(served, OWNER.address)
    assert f'id="deal-{deal}"' in page
    caption = page.split(f'id="deal-{deal}"')[1].split("</caption>")[0]
    assert "2 of 3 periods over" in caption
    assert f"paid {PRICE}" not in caption  # amounts are formatted, not base units
    rows = _cells(page, "deal-node")
    assert len(rows) == 3
    # (joined, proven, missed, not proven in time) per node, from the chain.
    assert [(r[2], r[3], r[4], r[5]) for r in rows] == [
        (">yes", ' class="proven">1', ' class="missed">0', ' class="unproven">1'),
        (">yes", ' class="proven">0', ' class="missed">1', ' class="unproven">1'),
        (">no", ' class="proven">0', ' class="missed">0', ' class="unproven">0'),
    ]
    # Node 0 answers its /health; the others' endpoints do not resolve.
    assert served["node"] in rows[0][1] and '<span class="ok">ok</span>' in rows[0][7]
    assert all('<span class="error">down</span>' in r[7] for r in rows[1:])
    assert "What a node" not in page

    # The node's own page: its record, health and what it earned in the deal.
    page = _page(served, NODES[0].address)
    record = page.split('id="node-record"')[1].split("</dl>")[0]
    assert "storage" in record and served["node"] in record and "ok" in record
    earned = page.split('id="node-deals"')[1].split("</table>")[0]
    assert f"<td>{deal}</td>" in earned and "<td>1</td>" in earned
    assert 'id="h-deals"' not in page  # it pays for no deal


def test_an_account_with_no_deal_and_no_node_shows_neither(
    embedded_ledger: Ledger, served: dict[str, str]
) -> None:
    page = _page(served, BUYER.address)
    assert 'id="h-deals"' not in page and 'id="h-node"' not in page


def test_the_latest_order_is_read_through_indexed_topics(
    embedded_ledger: Ledger, served: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's compute form asks for the consumer's latest order: the web node finds
    it among that consumer's orders of that dataset only, never scanning the chain."""
    first = publish(embedded_ledger).dataset
    second = publish(embedded_ledger).dataset
    fund(embedded_ledger, BUYER.address)
    fund(embedded_ledger, OTHER.address)
    txs = []
    for who, dataset in ((BUYER, first), (OTHER, first), (BUYER, second), (BUYER, first)):
        order = embedded_ledger.exchange.buy_and_order(
            who, dataset, embedded_ledger.datatoken(dataset)
        )
        txs.append(order)

    def no_scan(*_: Any, **__: Any) -> Any:
        raise AssertionError("the web node read every event")

    monkeypatch.setattr(Ledger, "events", no_scan)
    url = f"{served['web']}/api/orders/latest"
    r = httpx.get(url, params={"dataset": first, "account": BUYER.address.lower()})
    assert r.status_code == 200, r.text
    assert r.json() == {"tx": txs[3].tx.tx_hash, "expires_at": txs[3].expires_at}
    r = httpx.get(url, params={"dataset": second, "account": OTHER.address})
    assert r.status_code == 404 and "no order of service 0" in r.json()["detail"]
    r = httpx.get(url, params={"dataset": first, "account": BUYER.address, "service": 1})
    assert r.status_code == 404
    r = httpx.get(url, params={"dataset": 999, "account": BUYER.address})
    assert r.status_code == 404


def test_the_deals_page_in_chromium(
    embedded_ledger: Ledger, served: dict[str, str], browser: Any, artifacts: Path
) -> None:
    """The same page in a real browser, without JavaScript needed: the deal's table is
    found by its caption, its node rows by their header cells (kept as a screenshot)."""
    deal = _a_deal(embedded_ledger)
    page = browser.new_page(java_script_enabled=False)
    page.goto(f"{served['web']}/account?address={OWNER.address}", timeout=60_000)
    table = page.get_by_role("table", name=f"Deal {deal} on dataset")
    assert table.is_visible()
    assert table.get_by_role("columnheader", name="Health").is_visible()
    assert table.locator("tbody tr").count() == 3
    page.screenshot(path=str(artifacts / "owner-storage-deals.png"), full_page=True)
    page.goto(f"{served['web']}/account?address={NODES[0].address}", timeout=60_000)
    assert page.get_by_role("table", name="Storage deals this node serves").is_visible()
    page.screenshot(path=str(artifacts / "node-earnings.png"), full_page=True)
    page.close()
