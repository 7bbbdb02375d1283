"""Upload endpoints refuse an oversized body with 413 before reading it, and the
proxy's access log comes a page at a time.

The lie: a client announces (or streams) far more than any valid request. The old
endpoints read the whole body before checking its size, so the answer came only
after every byte (here: never, as the client stops sending); now it comes at once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Query

from datagora.catalog.api import create_catalog_app
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.compute.node import MAX_DENY_BYTES, MAX_JOB_BYTES
from datagora.ledger import Ledger
from datagora.node.apps import agent_app, compute_app, proxy_app
from datagora.node.connect import dev_identity
from datagora.node.inprocess import ThreadServer


@pytest.fixture
def served(embedded_ledger: Ledger, tmp_path: Path) -> Iterator[dict[str, ThreadServer]]:
    factories: dict[str, Callable[[], FastAPI]] = {
        "proxy": lambda: proxy_app(embedded_ledger, dev_identity(7), tmp_path / "proxy"),
        "agent": lambda: agent_app(
            embedded_ledger, dev_identity(1), ["http://127.0.0.1:9"], 1, tmp_path / "agent", 1.0
        ),
        "catalog": lambda: create_catalog_app(
            Indexer(embedded_ledger, Database(f"sqlite:///{tmp_path / 'catalog.db'}"))
        ),
    }
    servers = {name: ThreadServer(factory, name).start() for name, factory in factories.items()}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _status_line(sock: socket.socket) -> str:
    sock.settimeout(5)  # the old code waited for the whole body: no answer comes
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return "no answer within 5 s"
    return data.split(b"\r\n", 1)[0].decode()


def announce(url: str, method: str, path: str, length: int) -> str:
    """Send headers announcing `length` bytes, then 1 KiB of them; the status line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
            + b"{"
            + b" " * 1023
        )
        return _status_line(sock)


def stream(url: str, method: str, path: str, total: int) -> str:
    """Send `total` bytes in chunks, without the last chunk; the status line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = b" " * 16384
        for _ in range(total // len(piece)):
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        return _status_line(sock)


UPLOADS = [
    ("proxy", "PUT", "/kfrags"),
    ("proxy", "POST", "/reencrypt"),
    ("agent", "POST", "/delegations"),
    ("catalog", "PUT", "/metadata/" + "ab" * 32),
]


@pytest.mark.parametrize(("service", "method", "path"), UPLOADS)
def test_oversized_bodies_are_refused_before_they_are_read(
    served: dict[str, ThreadServer], service: str, method: str, path: str
) -> None:
    url = served[service].url
    assert announce(url, method, path, 100 << 20) == "HTTP/1.1 413 Request Entity Too Large"
    assert stream(url, method, path, 2 << 20) == "HTTP/1.1 413 Request Entity Too Large"
    # The refusal says why, in the service's error shape.
    r = httpx.request(method, url + path, content=b" " * (1 << 20))
    assert r.status_code == 413 and ("larger than" in r.text or "limited to" in r.text), r.text


def test_the_access_log_comes_a_page_at_a_time(served: dict[str, ThreadServer]) -> None:
    url = served["proxy"].url
    log = served["proxy"].app.state.proxy.log  # type: ignore[union-attr]
    for i in range(5):
        log.append(event="test", outcome="accepted", reason="", n=i)
    page = httpx.get(f"{url}/log", params={"offset": 1, "limit": 2}).text.splitlines()
    assert [json.loads(line)["seq"] for line in page] == [2, 3]
    assert len(httpx.get(f"{url}/log").text.splitlines()) == 5
    assert httpx.get(f"{url}/log", params={"offset": 5}).text == ""
    for bad in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}, {"offset": 2**63}):
        r = httpx.get(f"{url}/log", params=bad)
        assert r.status_code == 422, (bad, r.text)


def test_a_repeated_fragment_request_is_checked_again_not_refused_as_a_replay(
    served: dict[str, ThreadServer],
    embedded_ledger: Ledger,
    tmp_path: Path,
) -> None:
    """Fragment requests are idempotent (issue 17): a proxy that got a consumer's request
    first and forwarded it cannot make the others refuse it as "replayed"; the ledger
    check runs every time, so an unentitled consumer is refused each time, and nothing
    is written to the proxy's nonce log for it. (Nonces still guard deliveries; their
    durability is tested in tests/crypto/test_nonces.py.)"""
    import os

    from datagora.crypto.pre import dataset_scope, wrap_key
    from datagora.sharing.wire import Domain, ReencryptBody
    from helpers import publish

    owner, who = dev_identity(1), dev_identity(2)
    dataset = publish(embedded_ledger, owner=owner.account).dataset
    scope = dataset_scope(dataset, 1)
    wrapped = wrap_key(os.urandom(32), owner.delegating_public_key(scope), scope=scope)
    body = ReencryptBody.build(who, Domain.of(embedded_ledger), dataset, 1, wrapped.capsule)
    log = tmp_path / "proxy" / "nonces.log"
    size = log.stat().st_size if log.exists() else 0
    for _ in range(2):
        r = httpx.post(f"{served['proxy'].url}/reencrypt", content=json.dumps(body.to_json()))
        assert r.status_code == 403 and r.json()["error"] == "no_order", r.text
    assert (log.stat().st_size if log.exists() else 0) == size


@pytest.fixture
def compute(embedded_ledger: Ledger, tmp_path: Path) -> Iterator[str]:
    server = ThreadServer(
        lambda: compute_app(
            embedded_ledger, dev_identity(2), tmp_path / "compute", allow_weak_sandbox=True
        ),
        "compute",
    ).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "cap"), [("/jobs", MAX_JOB_BYTES), ("/owner/jobs/1/deny", MAX_DENY_BYTES)]
)
def test_compute_bodies_are_refused_before_they_are_read(compute: str, path: str, cap: int) -> None:
    assert announce(compute, "POST", path, 100 << 20) == "HTTP/1.1 413 Request Entity Too Large"
    assert stream(compute, "POST", path, cap + (64 << 10)) == (
        "HTTP/1.1 413 Request Entity Too Large"
    )
    r = httpx.post(compute + path, content=b" " * (cap + 1))
    assert r.status_code == 413 and "larger than" in r.json()["detail"], r.text


Limit = Annotated[int, Query(ge=1, le=100)]


def test_a_validation_refusal_reads_as_one_line_not_a_repr() -> None:
    from fastapi.testclient import TestClient

    from datagora.bodies import refusal_text

    app = FastAPI()

    @app.get("/items")
    def items(limit: Limit = 20) -> dict[str, int]:
        return {"limit": limit}

    answer = TestClient(app).get("/items", params={"limit": 1000})
    assert answer.status_code == 422
    text = refusal_text(answer.json(), answer.text)
    assert text == "query.limit: Input should be less than or equal to 100", text
    assert refusal_text({"detail": "no such dataset"}, "x") == "no such dataset"
    assert refusal_text(["not", "a", "dict"], "fallback") == "fallback"
    many = {"detail": [{"loc": ["query", f"p{i}"], "msg": "bad"} for i in range(7)]}
    assert refusal_text(many, "").endswith("query.p4: bad (and 2 more)")


@pytest.mark.parametrize("path", ["/api/compute/jobs", "/api/relay/proxy/0/reencrypt"])
def test_the_web_node_refuses_oversized_bodies_before_it_reads_them(path: str) -> None:
    """The lie: the web node read a whole forwarded body before checking its size."""
    from datagora.web.app import MAX_FORWARD_BYTES, WebConfig, create_web_app

    dead = "http://127.0.0.1:9"
    config = WebConfig(catalog=dead, compute=dead, proxies=[dead])
    server = ThreadServer(lambda: create_web_app(config), "web").start()
    try:
        assert announce(server.url, "POST", path, 100 << 20) == (
            "HTTP/1.1 413 Request Entity Too Large"
        )
        assert stream(server.url, "POST", path, 2 << 20) == "HTTP/1.1 413 Request Entity Too Large"
        r = httpx.post(server.url + path, content=b" " * (MAX_FORWARD_BYTES + 1))
        assert r.status_code == 413 and "larger than" in r.json()["detail"], r.text
    finally:
        server.stop()
