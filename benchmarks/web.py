"""`datagora bench web`: the server time to render a search page over 10,000 datasets.

A real catalog node (its HTTP API, SQLite FTS5) holding 10,000 datasets put in through
the indexer's own event-applying code (as `bench catalog` does), and a real web node
in front of it, both uvicorn servers on loopback in this process; each sample is one
``GET /?q=…`` of the web node, timed at the client (so it includes the web node's
request to the catalog and the page's rendering). The in-page download speed is not
measured yet (the page does not download: see docs/web.md).
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.catalog import TAGS, _doc, _percentile, _words
from datagora.catalog.api import create_catalog_app
from datagora.catalog.db import Database, blobs
from datagora.catalog.indexer import Indexer
from datagora.ledger import Ledger, dev_account
from datagora.node.inprocess import ThreadServer
from datagora.web.app import WebConfig, create_web_app

TARGET_MS = 100.0


def _fill(ix: Indexer, db: Database, datasets: int, rnd: random.Random) -> None:
    with db.engine.begin() as conn:
        for i in range(1, datasets + 1):
            raw = _doc(rnd, i)
            digest = hashlib.sha256(raw).digest()
            conn.execute(blobs.insert().values(sha256=digest.hex(), data=raw.decode()))
            ix._apply(
                conn, "DataNFT", "DatasetCreated",
                {
                    "owner": dev_account(1 + i % 5).address, "datatoken": "0x" + f"{i:040x}",
                    "metadata_hash": digest, "metadata_uri": "", "manifest_hash": bytes(32),
                    "merkle_root": bytes(32),
                },
                i, 0, "0x" + "00" * 32, i,
            )  # fmt: skip
            if i % 3:
                ix._apply(
                    conn, "FixedRateExchange", "ExchangeCreated",
                    {"price": rnd.randint(1, 100) * 10**17}, i, 1, "0x", i,
                )  # fmt: skip


def run(datasets: int = 10_000, queries: int = 200) -> dict[str, Any]:
    rnd = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.embedded()
        db = Database(f"sqlite:///{Path(tmp) / 'catalog.db'}")
        ix = Indexer(ledger, db)
        _fill(ix, db, datasets, rnd)
        catalog = ThreadServer(lambda: create_catalog_app(ix, 3600.0), "catalog").start()
        web = ThreadServer(
            lambda: create_web_app(WebConfig(catalog=catalog.url, ledger_factory=lambda: ledger)),
            "web",
        ).start()
        try:
            times: list[float] = []
            api: list[float] = []
            hits = 0
            with httpx.Client(timeout=30) as client:
                client.get(f"{web.url}/").raise_for_status()  # warm up
                for _ in range(queries):
                    params: dict[str, Any] = {
                        "q": " ".join(w[: rnd.randint(3, len(w))] for w in _words(rnd, 1)),
                        "sort": rnd.choice(["relevance", "relevance", "newest", "price_asc"]),
                    }
                    if rnd.random() < 0.3:
                        params["tag"] = rnd.choice(TAGS)
                    t0 = time.perf_counter()
                    r = client.get(f"{web.url}/", params=params)
                    times.append((time.perf_counter() - t0) * 1000)
                    r.raise_for_status()
                    # The same search from the catalog's API alone: what the page adds.
                    t0 = time.perf_counter()
                    client.get(f"{catalog.url}/datasets", params=params).raise_for_status()
                    api.append((time.perf_counter() - t0) * 1000)
                    hits += r.text.count('class="result"')
        finally:
            web.stop()
            catalog.stop()
            db.engine.dispose()
    p50 = _percentile(times, 0.5)
    return {
        "datasets": datasets,
        "queries": queries,
        "search_page_ms_p50": round(p50, 2),
        "search_page_ms_p95": round(_percentile(times, 0.95), 2),
        "search_page_target_ms": TARGET_MS,
        "catalog_api_ms_p50": round(_percentile(api, 0.5), 2),
        "search_page_within_target": p50 < TARGET_MS,
        "mean_results_shown": round(hits / queries, 1),
        "download_in_page_mb_s": None,
        "download_in_page_note": "not built yet: the page buys and orders, the CLI downloads",
    }
