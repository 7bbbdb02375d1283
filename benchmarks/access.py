"""`datagora bench access`: from order to plaintext, and a proxy's re-encryption rate.

* ``order_to_plaintext_ms_p50``/``_p95``: a small dataset (64 KiB CSV, one chunk,
  4-of-6 shares on six local storage nodes) is published; each sample is a fresh
  consumer that sends ``buy_and_order`` on anvil, fetches the data key from the local
  proxies (2-of-3) as soon as the owner's agent has delegated, downloads and
  verifies the shares and decrypts them. The clock runs from sending the
  transaction to holding the decrypted bytes (checked against the original);
  ``order_to_key_ms_p50`` is the part up to holding the key.
* ``reencryptions_per_s``: one proxy (``proxy_workers`` processes on its port, one
  per core: umbral-pre holds the GIL), concurrent clients over HTTP, each request
  a fresh signed FragmentRequest (signature, on-chain order check, re-encryption,
  access-log entry; fragment requests are idempotent, so there is no replay check).
  ``proxy_cpu_ms_per_reencryption`` is the CPU the proxy's processes spent per request.
* ``umbral_reencrypt_limit_per_s``: bare ``umbral_pre.reencrypt`` in this process,
  the same run, on one core. Two ratios compare them:

  - ``proxy_to_umbral_ratio``: the proxy as deployed (a worker per core, sharing
    the cores with the load generator and anvil) against the bare operation on
    one core;
  - ``per_core_ratio``: ``umbral_reencrypt_ms / proxy_cpu_ms_per_reencryption``,
    what one core running the proxy serves against the same core running the
    bare operation: the share of the proxy's CPU that is re-encryption.

  The ``one_worker_`` figures are the same measurements on a second proxy run as a
  single worker process: one core's worth of proxy, whose CPU per request is not
  inflated by two workers and the load generator contending for the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import umbral_pre

from datagora.crypto.keys import Identity
from datagora.crypto.pre import dataset_scope, make_kfrags, verify_kfrag, wrap_key
from datagora.ledger import Pricing, PublishParams, dev_account
from datagora.market import Endpoints, Marketplace
from datagora.sharing.wire import Domain, ReencryptBody
from datagora.testing.sharing import Network, wait_until
from datagora.testing.storage import LocalNodes

PRICE = 10**18
_META = {
    "title": "Bench cohort",
    "license": "CC-BY-4.0",
    "creator": "bench",
    "services": [{"id": 0, "type": "download", "price": str(PRICE)}],
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _consumer(net: Network) -> Identity:
    ident = Identity.generate()
    net.ledger.chain.fund(ident.address, 10**19)
    net.ledger.market_token.mint(dev_account(0), ident.address, 100 * PRICE)
    return ident


def _order_to_plaintext(
    net: Network, nodes: LocalNodes, samples: int, tmp: Path
) -> tuple[list[float], list[float]]:
    """(order→key, order→plaintext) milliseconds per sample."""
    endpoints = Endpoints(nodes.urls, net.proxy_urls, net.threshold)
    owner = Marketplace(net.ledger, endpoints, net.owner)
    data = b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * 7 % 1000) for i in range(6500))
    data = data[: 64 << 10]
    src = tmp / "small.csv"
    src.write_bytes(data)
    published = owner.publish(src, _META, pricing=Pricing.FIXED, price=PRICE)
    to_key, to_plain = [], []
    for n in range(samples):
        who = Marketplace(net.ledger, endpoints, _consumer(net))
        start = time.perf_counter()
        who.buy_and_order(published.dataset)
        key, manifest_hash = who.data_key(published.dataset)
        got_key = time.perf_counter()
        dst = tmp / f"out-{n}.csv"
        who.storage().download(manifest_hash, key, dst)
        plain = dst.read_bytes()
        done = time.perf_counter()
        if plain != data:
            raise AssertionError("the benchmark decrypted different bytes")
        to_key.append((got_key - start) * 1000)
        to_plain.append((done - start) * 1000)
    return to_key, to_plain


class _Client(asyncio.Protocol):
    """One keep-alive connection sending one request at a time: the load generator
    runs on the same cores as the proxy it measures, so it does as little as it can
    (bodies signed and encoded beforehand, responses parsed only for their status)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            self.waiter.set_exception(AssertionError("an answer without Content-Length"))
            return
        line_end = head.find(b"\r\n", at)
        length = int(head[at + 15 : line_end if line_end > 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the proxy closed the connection"))


async def _post_all(url: str, bodies: list[bytes], concurrency: int) -> int:
    ok = 0
    queue = list(reversed(bodies))
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = f"POST /reencrypt HTTP/1.1\r\nhost: {host}:{port}\r\n".encode()
    loop = asyncio.get_running_loop()
    clients = [
        (await loop.create_connection(_Client, host, int(port)))[1] for _ in range(concurrency)
    ]

    async def worker(client: _Client) -> None:
        nonlocal ok
        assert client.transport is not None
        while queue:
            body = queue.pop()
            client.waiter = loop.create_future()
            client.transport.write(
                head
                + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                + body
            )
            status = await client.waiter  # (not `ok += await …`: ok would be read first)
            ok += status == 200

    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    return ok


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every process under it (a proxy's workers)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    total += _cpu_seconds(int(child))
    return total


def _proxy_rates(
    net: Network, proxies: list[int], requests: int, concurrency: int
) -> list[tuple[float, float]]:
    """Re-encryptions per second through each of ``proxies`` in turn (indices into
    ``net.proxies``), and its CPU seconds per request."""
    ledger = net.ledger
    owner = net.owner
    published = ledger.factory.publish(
        owner.account,
        PublishParams(metadata_hash=os.urandom(32), pricing=Pricing.FIXED, price=PRICE),
    )
    dataset = published.dataset
    version = ledger.data_nft.get_dataset(dataset).version
    scope = dataset_scope(dataset, version)
    wrapped = wrap_key(os.urandom(32), owner.delegating_public_key(scope), scope=scope)
    who = _consumer(net)
    ledger.exchange.buy_and_order(
        who.account,
        dataset,
        ledger.datatoken(dataset),
        consumer_key=who.consumer_key(ledger.chain.chain_id).public_key,
    )
    wait_until(lambda: net.delegated(dataset, who.address), "the delegation")
    domain = Domain.of(ledger)
    rates = []
    # The owner's agent takes no part in re-encryption; stopped, its chain polling
    # (every 20 ms here, for the order-to-plaintext samples) leaves the cores alone.
    net.agent.pause()
    try:
        for index in proxies:
            bodies = [
                json.dumps(
                    ReencryptBody.build(who, domain, dataset, version, wrapped.capsule).to_json()
                ).encode()
                for _ in range(requests + concurrency)
            ]
            url = net.proxy_urls[index]
            process = net.proxies[index].process
            assert process is not None
            asyncio.run(_post_all(url, bodies[:concurrency], concurrency))  # warm up
            cpu = _cpu_seconds(process.pid)
            start = time.perf_counter()
            ok = asyncio.run(_post_all(url, bodies[concurrency:], concurrency))
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds(process.pid) - cpu
            if ok != requests:
                raise AssertionError(f"only {ok} of {requests} re-encryptions succeeded")
            rates.append((requests / elapsed, cpu / requests))
    finally:
        net.agent.resume()
    return rates


def _umbral_rate(seconds: float = 2.0) -> float:
    owner, consumer = Identity.generate(), Identity.generate()
    kfrag = make_kfrags(owner, consumer.umbral_public_key, 2, 3)[0]
    verified = verify_kfrag(
        kfrag, owner.verifying_key, owner.umbral_public_key, consumer.umbral_public_key
    )
    capsule, _ = umbral_pre.encrypt(owner.umbral_secret_key().public_key(), os.urandom(32))
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            umbral_pre.reencrypt(capsule, verified)
        count += 100
    return count / elapsed


def run(samples: int = 20, requests: int = 4000, concurrency: int = 16) -> dict[str, Any]:
    """Start anvil, 3 proxies (the first with a worker process per core, the others
    with one) and an agent; measure; stop everything."""
    workers = max(1, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="datagora-bench-access-") as tmp:
        # Proxies anchor their logs at the default interval (tests use 0.5 s).
        net = Network(
            Path(tmp),
            proxies=3,
            threshold=2,
            poll_interval=0.02,
            proxy_workers=[workers, 1, 1],
            anchor_every=60.0,
        )
        try:
            net.start()
            with LocalNodes(6, Path(tmp) / "storage") as nodes:
                to_key, times = _order_to_plaintext(net, nodes, samples, Path(tmp))
            (proxy_rate, proxy_cpu), (one_rate, one_cpu) = _proxy_rates(
                net, [0, 1], requests, concurrency
            )
        finally:
            net.stop()
    umbral_rate = _umbral_rate()
    return {
        "order_to_plaintext_ms_p50": round(statistics.median(times), 1),
        "order_to_plaintext_ms_p95": round(_percentile(times, 0.95), 1),
        "order_to_key_ms_p50": round(statistics.median(to_key), 1),
        "order_samples": samples,
        "proxies": 3,
        "threshold": 2,
        "reencryptions_per_s": round(proxy_rate, 1),
        "reencrypt_clients": concurrency,
        "proxy_workers": workers,
        "umbral_reencrypt_limit_per_s": round(umbral_rate, 1),
        "proxy_to_umbral_ratio": round(proxy_rate / umbral_rate, 3),
        # CPU the proxy process spent per request, against one bare re-encryption:
        # the overhead without the load generator and anvil sharing the cores.
        "proxy_cpu_ms_per_reencryption": round(proxy_cpu * 1000, 3),
        "umbral_reencrypt_ms": round(1000 / umbral_rate, 3),
        "per_core_ratio": round(1 / umbral_rate / proxy_cpu, 3),
        "one_worker_reencryptions_per_s": round(one_rate, 1),
        "one_worker_ratio": round(one_rate / umbral_rate, 3),
        "one_worker_cpu_ms_per_reencryption": round(one_cpu * 1000, 3),
        "one_worker_per_core_ratio": round(1 / umbral_rate / one_cpu, 3),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
    sys.exit(0)
