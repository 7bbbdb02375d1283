"""The web node fuzzed from its OpenAPI schema (FastAPI's, built from the app: the web
node does not publish one), served over loopback in front of a real catalog and the
embedded chain: no 5xx, no hang, every status documented, and every 4xx says why (a
JSON ``detail`` under ``/api/``, the error page's message elsewhere). The web node
holds no state of its own; the catalog's search results must not change. It is a
gateway to the compute node, the proxies and the storage nodes (none answer here):
502 or 503 saying which one failed is its right answer then, and allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from test_pages import _put

from datagora.catalog.api import create_catalog_app
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.ledger import Ledger
from datagora.node.inprocess import ThreadServer
from datagora.web.app import WebConfig, create_web_app
from helpers import publish
from schemafuzz import EXAMPLES, fuzz


def test_the_web_node_survives_fuzzing_from_its_schema(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    publish(embedded_ledger)
    db = Database(f"sqlite:///{tmp_path / 'catalog.db'}")
    ix = Indexer(embedded_ledger, db)
    with db.engine.begin() as conn:
        _put(ix, conn, 1, "Heart cohort", 15 * 10**17, ["medical"])
    catalog = ThreadServer(lambda: create_catalog_app(ix, 3600.0), "catalog").start()
    config = WebConfig(
        catalog=catalog.url,
        proxies=["http://127.0.0.1:9"],
        storage=["http://127.0.0.1:9"],
        ledger_factory=lambda: embedded_ledger,
    )
    app = create_web_app(config)
    web = ThreadServer(lambda: app, "web").start()
    try:

        def state() -> Any:
            return httpx.get(f"{catalog.url}/datasets", params={"include_inactive": True}).json()

        before = state()
        report = fuzz(web.url, document=app.openapi(), gateway=True)
        assert state() == before
    finally:
        web.stop()
        catalog.stop()
        db.engine.dispose()
    print(f"web: {len(report.operations)} operations, {report.examples} examples")
    assert not report.failures, "\n\n".join(report.failures)
    assert len(report.operations) >= 17, report.operations
    assert report.examples >= EXAMPLES * len(report.operations)
