"""`datagora bench catalog`: how soon a publish is searchable, how fast search is at
10,000 datasets, and how long the audit of 10,000 events takes.

- index latency: a real catalog node process follows a real anvil; for each
  publish, the time from its receipt to the dataset showing in `GET /datasets`.
- search: 10,000 datasets in SQLite (FTS5), put in through the indexer's own
  event-applying code (synthetic events: publishing 10,000 datasets through
  anvil would take minutes and measure the chain, not the search), then a mix
  of full-text and filtered queries through the same code the API runs.
- audit: `benchmarks.audit` (the timeline of a dataset with 10,000 events).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from datagora.catalog.db import Database, blobs
from datagora.catalog.indexer import Indexer
from datagora.catalog.search import SearchQuery, search
from datagora.ledger import Chain, Ledger, PublishParams, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ports import free_port
from datagora.storage.metadata import build_metadata

# A vocabulary of ~3,000 made-up words used with a Zipf-like frequency (half the
# words drawn from a Pareto rank, half uniformly), so that, as in real text, a few
# words are everywhere and most are rare.
_SYLLABLES = [
    "ka",
    "to",
    "ri",
    "me",
    "lo",
    "sa",
    "ne",
    "vi",
    "du",
    "po",
    "ra",
    "ti",
    "mo",
    "ke",
    "lu",
    "ze",
    "fa",
    "gi",
]
_v = random.Random(5)
WORDS = sorted({"".join(_v.choices(_SYLLABLES, k=_v.randint(2, 4))) for _ in range(4000)})


def _words(rnd: random.Random, k: int) -> list[str]:
    return [
        WORDS[min(int(rnd.paretovariate(1.0)) - 1, len(WORDS) - 1)]
        if rnd.random() < 0.5
        else rnd.choice(WORDS)
        for _ in range(k)
    ]


TAGS = ["medical", "iot", "finance", "audio", "vision", "tabular", "geo", "text", "time-series"]
LICENSES = ["CC-BY-4.0", "CC0-1.0", "proprietary", "ODbL-1.0"]


def _doc(rnd: random.Random, i: int) -> bytes:
    return build_metadata(
        {
            "title": " ".join(_words(rnd, 4)) + f" {i}",
            "description": " ".join(_words(rnd, 40)),
            "tags": sorted(rnd.sample(TAGS, rnd.randint(1, 3))),
            "license": rnd.choice(LICENSES),
            "creator": f"org-{rnd.randint(1, 300)}",
            "columns": [{"name": c, "type": "float"} for c in dict.fromkeys(_words(rnd, 5))],
            "services": [{"id": 0, "type": rnd.choice(["download", "compute"])}],
        }
    ).to_bytes()


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def index_latency(samples: int = 20) -> list[float]:
    latencies: list[float] = []
    with Anvil() as node, tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.deploy(Chain.rpc(node.url), dev_account(0))
        ledger.deployment.save(Path(tmp) / "deployment.json")
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "datagora",
                "node",
                "--roles",
                "catalog",
                "--port",
                str(port),
                "--data",
                tmp,
                "--rpc",
                node.url,
                "--deployment",
                str(Path(tmp) / "deployment.json"),
            ],
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(timeout=5) as client:
                for _ in range(300):
                    try:
                        client.get(base + "/health")
                        break
                    except httpx.HTTPError:
                        time.sleep(0.05)
                rnd = random.Random(1)
                for i in range(samples):
                    raw = _doc(rnd, i)
                    digest = hashlib.sha256(raw).digest()
                    client.put(f"{base}/metadata/{digest.hex()}", content=raw)
                    ledger.factory.publish(dev_account(1), PublishParams(metadata_hash=digest))
                    mined = time.perf_counter()
                    title = str(build_metadata(json.loads(raw)).title)
                    while True:
                        r = client.get(base + "/datasets", params={"q": title, "limit": 1})
                        if r.json()["total"]:
                            break
                        time.sleep(0.005)
                    latencies.append((time.perf_counter() - mined) * 1000)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return latencies


def search_latency(datasets: int = 10_000, queries: int = 500) -> dict[str, Any]:
    rnd = random.Random(2)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.embedded()  # only for the indexer's identity checks
        db = Database(f"sqlite:///{Path(tmp) / 'catalog.db'}")
        ix = Indexer(ledger, db)
        started = time.perf_counter()
        with db.engine.begin() as conn:
            for i in range(1, datasets + 1):
                raw = _doc(rnd, i)
                digest = hashlib.sha256(raw).digest()
                conn.execute(blobs.insert().values(sha256=digest.hex(), data=raw.decode()))
                ix._apply(
                    conn,
                    "DataNFT",
                    "DatasetCreated",
                    {
                        "owner": dev_account(1 + i % 5).address,
                        "datatoken": "0x" + f"{i:040x}",
                        "metadata_hash": digest,
                        "metadata_uri": "",
                        "manifest_hash": bytes(32),
                        "merkle_root": bytes(32),
                    },
                    i,
                    0,
                    "0x" + "00" * 32,
                    i,
                )
                if i % 3:
                    ix._apply(
                        conn,
                        "FixedRateExchange",
                        "ExchangeCreated",
                        {"price": rnd.randint(1, 100) * 10**17},
                        i,
                        1,
                        "0x",
                        i,
                    )
        load_s = time.perf_counter() - started

        def measure(make_words: Any) -> tuple[list[float], int]:
            times: list[float] = []
            hits = 0
            for _ in range(queries):
                q = SearchQuery(
                    q=" ".join(make_words()),
                    tags=tuple(rnd.sample(TAGS, rnd.choice([0, 0, 1]))),
                    max_price=rnd.choice([None, None, 5.0]),
                    sort=rnd.choice(["relevance", "relevance", "newest", "price_asc"]),
                    limit=20,
                )
                t0 = time.perf_counter()
                hits += search(db, q).total
                times.append((time.perf_counter() - t0) * 1000)
            return times, hits

        # Typical: one or two words as they occur in the text (prefixes of them).
        typical, hits = measure(
            lambda: [w[: rnd.randint(3, len(w))] for w in _words(rnd, rnd.randint(1, 2))]
        )
        # Broad: one of the ten commonest words, matching a large part of the corpus.
        broad, broad_hits = measure(lambda: [rnd.choice(WORDS[:10])])
        db.engine.dispose()
    return {
        "datasets": datasets,
        "queries": queries,
        "load_s": round(load_s, 1),
        "search_p50_ms": round(_percentile(typical, 0.5), 2),
        "search_p95_ms": round(_percentile(typical, 0.95), 2),
        "mean_hits": round(hits / queries, 1),
        "search_broad_p50_ms": round(_percentile(broad, 0.5), 2),
        "search_broad_p95_ms": round(_percentile(broad, 0.95), 2),
        "broad_mean_hits": round(broad_hits / queries, 1),
    }


def run(samples: int = 20, datasets: int = 10_000) -> dict[str, Any]:
    from benchmarks import audit

    latencies = index_latency(samples)
    result: dict[str, Any] = {
        "index_latency_ms_p50": round(statistics.median(latencies), 1),
        "index_latency_ms_p95": round(_percentile(latencies, 0.95), 1),
        "index_samples": samples,
        "database": "sqlite",
    }
    result.update(search_latency(datasets))
    audited = audit.run()
    result["audit_s"] = audited["audit_s"]
    result["audit_events"] = audited.get("events")
    result["targets"] = {
        "index_latency_ms_p50_max": 1000,
        "index_ok": result["index_latency_ms_p50"] < 1000,
        "search_p95_ms_max": 50,
        "search_ok": result["search_p95_ms"] < 50,
        "audit_s_max": 2.0,
        "audit_ok": result["audit_s"] < 2.0,
    }
    return result
