"""The web node's pages without a browser: a real catalog (its API over HTTP, SQLite) in
front of the embedded chain, the web app over HTTP too. Quick checks of what a
hostile dataset or visitor could try: markup in titles, bad filters, a dead catalog."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prov.model import ProvDocument
from sqlalchemy import update

from datagora.catalog.api import create_catalog_app
from datagora.catalog.db import Database, blobs, datasets
from datagora.catalog.indexer import Indexer
from datagora.ledger import Ledger, dev_account
from datagora.node.inprocess import ThreadServer
from datagora.ports import free_port
from datagora.storage.metadata import build_metadata
from datagora.web.app import WebConfig, create_web_app
from datagora.web.provsvg import prov_svg

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _put(
    ix: Indexer,
    conn: Any,
    i: int,
    title: str,
    price: int | None,
    tags: list[str],
    *,
    dp: bool = False,
    size: int | None = None,
) -> None:
    services: list[dict[str, Any]] = [{"id": 0, "type": "download"}]
    if dp:
        services.append({"id": 1, "type": "compute", "differential_privacy": True})
    raw = build_metadata(
        {
            "title": title,
            "description": f"description {i}",
            "tags": tags,
            "license": "CC0-1.0",
            "creator": EVIL,
            "services": services,
        }
    ).to_bytes()
    digest = hashlib.sha256(raw).digest()
    conn.execute(blobs.insert().values(sha256=digest.hex(), data=raw.decode()))
    ix._apply(
        conn, "DataNFT", "DatasetCreated",
        {
            "owner": dev_account(1).address, "datatoken": "0x" + f"{i:040x}",
            "metadata_hash": digest, "metadata_uri": "", "manifest_hash": bytes(32),
            "merkle_root": bytes(32),
        },
        i, 0, "0x" + "00" * 32, i,
    )  # fmt: skip
    if price is not None:
        ix._apply(
            conn, "FixedRateExchange", "ExchangeCreated", {"price": price}, i, 1, "0x", i
        )  # fmt: skip
    if size is not None:  # as Indexer.retry_sizes records it from the manifest
        conn.execute(update(datasets).where(datasets.c.id == i).values(size=size))


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("pages")
    ledger = Ledger.embedded()
    db = Database(f"sqlite:///{Path(tmp) / 'catalog.db'}")
    ix = Indexer(ledger, db)
    with db.engine.begin() as conn:
        _put(ix, conn, 1, "Heart cohort", 15 * 10**17, ["medical"], size=2_345_678)
        _put(ix, conn, 2, EVIL, 3 * 10**18, ["medical", "x-ray"], dp=True)
        _put(ix, conn, 3, "Traffic counts", None, ["iot"], size=999)
    catalog = ThreadServer(lambda: create_catalog_app(ix, 3600.0), "catalog").start()
    # No chain for the pages here: they still read the catalog (the history says why not).
    server = ThreadServer(lambda: create_web_app(WebConfig(catalog=catalog.url)), "web").start()
    try:
        yield server.url
    finally:
        server.stop()
        catalog.stop()
        db.engine.dispose()


def test_search_filters_and_sorts(web: str) -> None:
    page = httpx.get(f"{web}/", params={"q": "heart"}).text
    assert "1 dataset found" in page and "Heart cohort" in page
    page = httpx.get(f"{web}/", params={"tag": "medical", "sort": "price_desc"}).text
    assert "2 datasets found" in page
    assert page.index("/datasets/2") < page.index("/datasets/1")  # 3 DGM before 1.5 DGM
    page = httpx.get(f"{web}/", params={"min_price": "2", "cost": "paid"}).text
    assert "1 dataset found" in page and "/datasets/2" in page
    page = httpx.get(f"{web}/", params={"max_price": "2"}).text
    assert "/datasets/1" in page and "/datasets/2" not in page


def test_results_show_size_and_filter_dp_compute(web: str) -> None:
    page = httpx.get(f"{web}/", params={"sort": "oldest"}).text
    sizes = [part.split("</dd>")[0] for part in page.split("<dt>Size</dt><dd>")[1:]]
    assert sizes == ["2.35 MB", "unknown", "999 bytes"]  # unknown: no manifest fetched yet
    page = httpx.get(f"{web}/", params={"service": "dp"}).text
    assert "1 dataset found" in page and "/datasets/2" in page
    assert "(compute with differential privacy)" in page
    assert '<option value="dp" selected>' in page  # the form keeps the filter (no JS)
    page = httpx.get(f"{web}/", params={"service": "compute"}).text
    assert "1 dataset found" in page and "/datasets/2" in page


def test_markup_in_metadata_is_shown_as_text(web: str) -> None:
    for url in (f"{web}/?q=", f"{web}/datasets/2"):
        page = httpx.get(url).text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert" in page


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"min_price": "abc"}, "is not a number"),
        ({"max_price": "-1"}, "must be zero or more"),
        ({"sort": "evil"}, "sort must be one of"),
        ({"cost": "cheap"}, "cost is free or paid"),
        ({"service": "mining"}, "service is one of download, compute, dp"),
        ({"page": "x"}, "page must be a number"),
        ({"min_price": "5", "max_price": "1"}, "min_price is above max_price"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(
    web: str, params: dict[str, str], reason: str
) -> None:
    r = httpx.get(f"{web}/", params=params)
    assert 400 <= r.status_code < 500
    assert reason in r.text


def test_unknown_dataset_and_account(web: str) -> None:
    r = httpx.get(f"{web}/datasets/99")
    assert r.status_code == 404 and "no dataset 99" in r.text
    r = httpx.get(f"{web}/account", params={"address": "0x123"})
    assert r.status_code == 422 and "20-byte hex" in r.text
    r = httpx.get(f"{web}/api/relay/storage/0/shares/" + "a" * 64)
    assert r.status_code == 404 and r.json()["detail"] == "this network has no storage 0"


def test_a_dead_catalog_is_a_clear_502() -> None:
    app = create_web_app(WebConfig(catalog=f"http://127.0.0.1:{free_port()}"))
    server = ThreadServer(lambda: app, "web").start()
    try:
        r = httpx.get(f"{server.url}/")
        assert r.status_code == 502 and "the catalog did not answer" in r.text
    finally:
        server.stop()


def test_the_prov_picture_escapes_labels_and_lays_out_in_layers() -> None:
    doc = ProvDocument()
    ns = doc.add_namespace("datagora", "https://datagora.org/ns/")
    v1 = doc.entity(ns["dataset/1/v1"], {"prov:type": ns["DatasetVersion"]})
    act = doc.activity(ns["tx/0xabc/0"], None, None, {"prov:type": EVIL})
    who = doc.agent(ns["account/0x" + "ab" * 20])
    v2 = doc.entity(ns["dataset/1/v2"], {"prov:type": ns["DatasetVersion"]})
    doc.wasGeneratedBy(v2, act)
    doc.used(act, v1)
    doc.wasAssociatedWith(act, who)
    svg = prov_svg(doc, "Provenance <of> 1")
    assert "<script>" not in svg and "Provenance &lt;of&gt; 1" in svg
    assert svg.count('class="prov-entity"') == 2 and svg.count('class="prov-agent"') == 1
    assert svg.count("<line") == 3
    # v1 (used) sits left of the activity, which sits left of v2 (generated by it).
    xs = {}
    for part in svg.split("<g ")[1:]:
        ident = part.split("<title>")[1].split("</title>")[0]
        xs[ident] = int(part.split('x="')[1].split('"')[0])
    assert xs["datagora:dataset/1/v1"] < xs["datagora:tx/0xabc/0"] < xs["datagora:dataset/1/v2"]


def test_a_dataset_not_for_sale_offers_a_request_not_a_purchase(web: str) -> None:
    page = httpx.get(f"{web}/datasets/3").text
    assert "not for sale: ask the owner" in page
    assert "Buy and order" not in page
    assert 'datagora request 3 --purpose "what for"' in page.replace("&#34;", '"')
    page = httpx.get(f"{web}/datasets/1").text
    assert "datagora buy 1" in page and "dataset.buy_and_order()" in page
