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
import json
import os
import random
import signal
import subprocess
import sys
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
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SHIM = """(() => { const RPC = %(rpc)r, ACCOUNT = %(account)r; let id = 0;
  window.ethereum = { async request({ method, params }) {
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [ACCOUNT];
    if (method === "wallet_switchEthereumChain") return null;
    const r = await fetch(RPC, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params: params || [] }) });
    const a = await r.json(); if (a.error) throw new Error(a.error.message); return a.result;
  }, on() {}, removeListener() {} }; })();"""


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


def _cli(env: dict[str, str], *args: str) -> Any:
    r = subprocess.run(
        [sys.executable, "-m", "datagora", *args, "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"datagora {args[0]}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def download_speeds(size_mb: int = 16) -> dict[str, Any]:
    """MB/s of the CLI's download and of the page's, on one network, same file."""
    if not Path(CHROMIUM).exists():
        return {"download_in_page_note": f"no {CHROMIUM}: run `make browser`"}
    from playwright.sync_api import sync_playwright

    import datagora.sdk as dg
    from datagora.ledger import dev_account

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        directory = base / "net"
        env = {**os.environ, "DATAGORA_NETWORK": str(directory / "network.json")}
        env.pop("DATAGORA_ACCOUNT", None)
        log = open(base / "up.log", "ab")  # noqa: SIM115 - closed in finally
        up = subprocess.Popen(
            [sys.executable, "-m", "datagora", "up", "--dir", str(directory)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while "ready:" not in (base / "up.log").read_text(errors="replace"):
                if up.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("datagora up did not start: see its log")
                time.sleep(1)
            info = json.loads((directory / "network.json").read_text())
            password = (directory / "password").read_text().strip()
            env.update(DATAGORA_KEYS_DIR=str(directory / "keys"), DATAGORA_PASSWORD=password)
            data = os.urandom(size_mb << 20)
            (base / "data.bin").write_bytes(data)
            published = _cli(env, "publish", str(base / "data.bin"), "--title", "bench",
                             "--free", "--account", "owner")  # fmt: skip
            dataset = int(published["dataset"])
            market = dg.connect(
                directory / "network.json", "researcher", directory / "keys", password
            )
            ds = market.dataset(dataset)
            ds.order_free()
            # Once untimed: the first fetch waits for the owner's agent to delegate.
            ds.download(base / "cli.bin")
            t0 = time.perf_counter()
            ds.download(base / "cli.bin")
            cli_s = time.perf_counter() - t0
            assert (base / "cli.bin").read_bytes() == data, "the CLI's copy differs"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    context = browser.new_context()
                    who = str(dev_account(3).address)
                    context.add_init_script(SHIM % {"rpc": info["chain_url"], "account": who})
                    page = context.new_page()
                    page.goto(f"{info['web']}/datasets/{dataset}")
                    page.get_by_role("button", name="Get service 0").click()
                    page.wait_for_function("document.body.dataset.ordered", timeout=120_000)
                    page.evaluate("async () => { await window.datagora.downloadInPage(); }")
                    t0 = time.perf_counter()
                    digest = page.evaluate(
                        """async () => {
                          const r = await window.datagora.downloadInPage();
                          const all = new Uint8Array(r.total); let at = 0;
                          for (const p of r.parts) { all.set(p, at); at += p.length; }
                          const d = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
                          return Array.from(d, x => x.toString(16).padStart(2, '0')).join('');
                        }"""
                    )
                    page_s = time.perf_counter() - t0
                finally:
                    browser.close()
            assert digest == hashlib.sha256(data).hexdigest(), "the page's copy differs"
        finally:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
            log.close()
    mb = len(data) / 1e6
    return {
        "download_mb": round(mb, 1),
        "download_cli_mb_s": round(mb / cli_s, 2),
        "download_in_page_mb_s": round(mb / page_s, 2),
        "download_in_page_vs_cli": round(cli_s / page_s, 2),
        "download_in_page_target_vs_cli": 0.3,
    }


def run(datasets: int = 10_000, queries: int = 200, download_mb: int = 16) -> dict[str, Any]:
    result = search_page(datasets, queries)
    result.update(download_speeds(download_mb))
    return result


def search_page(datasets: int = 10_000, queries: int = 200) -> dict[str, Any]:
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
                first = client.get(f"{web.url}/")  # warm up; and the page's weight
                first.raise_for_status()
                assets = [
                    "/static/style.css", "/static/wallet.js",
                    "/vendor/htmx/htmx.min.js", "/vendor/ethers/ethers.umd.min.js",
                ]  # fmt: skip
                weight = {a: len(client.get(f"{web.url}{a}").content) for a in assets}
                wasm = "/vendor/umbral/umbral_pre_wasm_bg.wasm"  # loaded when a key is needed
                wasm_size = len(client.get(f"{web.url}{wasm}").content)
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
        "search_page_html_kb": round(len(first.content) / 1024, 1),
        "search_page_assets_kb": round(sum(weight.values()) / 1024, 1),
        "wallet_wasm_kb_on_first_use": round(wasm_size / 1024, 1),
    }
