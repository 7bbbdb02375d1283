"""The catalog under faults: a locked database, a dead thread, a metadata server that
drips, one that is down at first, URIs pointing inside, ids too large for SQLite.

Each test serves the real catalog app over loopback, on the embedded chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from datagora.catalog.api import create_catalog_app
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.catalog.resolver import MetadataResolver, is_public_host
from datagora.ledger import Ledger
from datagora.node.inprocess import ThreadServer
from datagora.storage.metadata import build_metadata
from helpers import publish


def meta(title: str) -> bytes:
    doc = {
        "title": title,
        "license": "CC0-1.0",
        "creator": "test",
        "services": [{"id": 0, "type": "download"}],
    }
    return build_metadata(doc).to_bytes()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def serving(indexer: Indexer, **kw: Any) -> Iterator[str]:
    server = ThreadServer(
        lambda: create_catalog_app(indexer, poll_interval=0.05, **kw), "catalog"
    ).start()
    try:
        yield server.url
    finally:
        server.stop()


def found(url: str, q: str) -> int:
    return int(httpx.get(f"{url}/datasets", params={"q": q}).json()["total"])


class Documents(BaseHTTPRequestHandler):
    """A real HTTP server on loopback holding documents by path; counts requests."""

    docs: dict[str, bytes]
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = self.docs.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def documents() -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    handler = type("H", (Documents,), {"docs": {}, "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.docs, handler.hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dripping() -> Iterator[str]:
    """A server announcing a 1000-byte document and sending one byte per second."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the accepting thread notices the end of the test
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                if stop.wait(1.0):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/meta.json"
    finally:
        stop.set()
        accepting.join(timeout=5)
        listener.close()


def test_indexer_survives_a_locked_database_and_health_says_so(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.db"
    ix = Indexer(embedded_ledger, Database(f"sqlite:///{path}?timeout=0.2"))
    raw = meta("written while locked")
    ix.put_metadata(raw)
    with serving(ix) as url:
        wait_for(lambda: httpx.get(f"{url}/health").json()["status"] == "ok", "a first sync")
        # Another process holds the write lock (as a PUT /metadata in another worker,
        # or a backup tool, would): every write of the indexer fails for a while.
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        publish(embedded_ledger, metadata_hash=hashlib.sha256(raw).digest())
        health = wait_for(
            lambda: (h := httpx.get(f"{url}/health")).json()["indexer"]["failures"] and h,
            "the failure to show",
        )
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert "database is locked" in health.json()["error"]
        assert health.json()["indexer"]["alive"] is True
        holder.execute("COMMIT")
        holder.close()
        wait_for(lambda: found(url, "locked"), "the dataset after the lock was released")
        body = wait_for(
            lambda: (h := httpx.get(f"{url}/health").json())["status"] == "ok" and h,
            "health to recover",
        )
        assert body["lag_blocks"] == 0 and body["indexer"]["failures"] == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_indexer_thread_is_unhealthy(embedded_ledger: Ledger, tmp_path: Path) -> None:
    class Fatal(BaseException):
        """Not an Exception: nothing may catch it, so the thread ends."""

    ix = Indexer(embedded_ledger, Database(f"sqlite:///{tmp_path / 'c.db'}"))

    def crash() -> int:
        raise Fatal

    ix.sync = crash  # type: ignore[method-assign]
    with serving(ix) as url:
        r = wait_for(lambda: (h := httpx.get(f"{url}/health")).status_code == 503 and h, "a 503")
        assert r.json()["status"] == "dead" and r.json()["indexer"]["alive"] is False
        # `datagora status` reports it, with the reason.
        from datagora.node.network import Network
        from datagora.node.status import check_network

        net = Network(chain_url="http://127.0.0.1:9", deployment=embedded_ledger.deployment)
        net.catalog = url
        (part,) = [p for p in check_network(net) if p.part == "catalog"]
        assert not part.ok and part.detail.startswith("/health answered 503: dead")


def test_a_dripping_metadata_server_does_not_stall_indexing(
    embedded_ledger: Ledger, tmp_path: Path, dripping: str
) -> None:
    # The fetch itself ends at its total deadline, though every byte comes in time.
    resolver = MetadataResolver(deadline=1.0, allow_private=True)
    started = time.monotonic()
    assert resolver.resolve(dripping, hashlib.sha256(b"x" * 1000).digest()) is None
    assert time.monotonic() - started < 3.5

    ix = Indexer(embedded_ledger, Database(f"sqlite:///{tmp_path / 'c.db'}"), resolver)
    slow = publish(embedded_ledger, metadata_hash=hashlib.sha256(b"slow").digest(),
                   metadata_uri=dripping).dataset  # fmt: skip
    raw = meta("indexed in time")
    ix.put_metadata(raw)
    with serving(ix, retry_every=0.05) as url:
        publish(embedded_ledger, metadata_hash=hashlib.sha256(raw).digest())
        started = time.monotonic()
        wait_for(lambda: found(url, "indexed in time"), "the second dataset", timeout=10)
        assert time.monotonic() - started < 3
        details = httpx.get(f"{url}/datasets/{slow}").json()
        assert details["metadata_status"] == "pending"
        assert httpx.get(f"{url}/health").json()["pending_metadata"] == 1


def test_metadata_unreachable_once_is_fetched_again(
    embedded_ledger: Ledger,
    tmp_path: Path,
    documents: tuple[str, dict[str, bytes], list[str]],
) -> None:
    base, docs, hits = documents
    raw = meta("served later")
    resolver = MetadataResolver(allow_private=True)
    ix = Indexer(embedded_ledger, Database(f"sqlite:///{tmp_path / 'c.db'}"), resolver)
    with serving(ix, retry_every=0.05) as url:
        d = publish(embedded_ledger, metadata_hash=hashlib.sha256(raw).digest(),
                    metadata_uri=f"{base}/m.json").dataset  # fmt: skip
        wait_for(lambda: hits, "a first fetch (404)")
        assert httpx.get(f"{url}/datasets/{d}").json()["metadata_status"] == "pending"
        docs["/m.json"] = raw  # the server has it now; nobody pushes it to the catalog
        wait_for(lambda: found(url, "served later"), "the retried fetch", timeout=10)
        assert httpx.get(f"{url}/health").json()["pending_metadata"] == 0


def test_private_and_loopback_uris_are_refused_unless_allowed(
    embedded_ledger: Ledger,
    tmp_path: Path,
    documents: tuple[str, dict[str, bytes], list[str]],
) -> None:
    base, docs, hits = documents
    raw = meta("inside")
    docs["/inside.json"] = raw
    digest = hashlib.sha256(raw).digest()
    assert MetadataResolver().resolve(f"{base}/inside.json", digest) is None
    assert hits == []  # not even asked
    assert MetadataResolver(allow_private=True).resolve(f"{base}/inside.json", digest) == raw
    for host in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1",
                 "::ffff:127.0.0.1", "100.64.0.1", "0.0.0.0", "localhost"):  # fmt: skip
        assert not is_public_host(host, 80), host
    assert is_public_host("8.8.8.8", 80)

    # The catalog's default resolver is the refusing one.
    ix = Indexer(embedded_ledger, Database(f"sqlite:///{tmp_path / 'c.db'}"))
    hits.clear()
    publish(embedded_ledger, metadata_hash=digest, metadata_uri=f"{base}/inside.json")
    ix.sync()
    ix.retry_pending()
    assert hits == [] and ix.pending_count() == 1


def test_out_of_range_ids_are_422_not_500(embedded_ledger: Ledger, tmp_path: Path) -> None:
    ix = Indexer(embedded_ledger, Database(f"sqlite:///{tmp_path / 'c.db'}"))
    big = 2**63
    with serving(ix) as url:
        for path, params in (
            ("/datasets", {"offset": big}),
            ("/datasets", {"offset": -1}),
            (f"/datasets/{big}", {}),
            ("/datasets/-1", {}),
            (f"/datasets/{2**256}", {}),
        ):
            r = httpx.get(url + path, params=params)
            assert r.status_code == 422, (path, params, r.text)
            assert r.json()["detail"], r.text  # says which parameter and why
        assert httpx.get(f"{url}/datasets/{big - 1}").status_code == 404
        r = httpx.get(f"{url}/datasets", params={"offset": big - 1})
        assert r.status_code == 200 and r.json()["items"] == []
