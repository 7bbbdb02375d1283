"""JSON-RPC 2.0 over HTTP: the one place that writes requests and reads replies.

Used by the RPC chain (transactions, batched view calls), the view-call
coalescer, anvil's control calls and ``datagora status``. The hot paths keep
their own transports (a keep-alive connection per thread, an asyncio HTTP/1.1
pool); what they send and how a reply is read is written here once.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from datagora.ledger.errors import ChainError, ChainUnreachable, RpcError

__all__ = ["Connections", "batch", "by_id", "call", "error_message", "request"]


def request(method: str, params: Sequence[Any], id: int = 1) -> dict[str, Any]:
    """One JSON-RPC request object."""
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": list(params)}


def batch(method: str, params: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """A batch of `method` requests, one per parameter list, with ids 0, 1, 2, ..."""
    return [request(method, p, i) for i, p in enumerate(params)]


def error_message(error: Any) -> str:
    """The human part of a JSON-RPC error object."""
    return str(error.get("message", error)) if isinstance(error, Mapping) else str(error)


def result(reply: Any, method: str) -> Any:
    """The result of one reply; :class:`RpcError` for an error answer."""
    if not isinstance(reply, Mapping):
        raise RpcError(method, f"not a JSON-RPC reply: {str(reply)[:200]}")
    if "error" in reply:
        raise RpcError(method, reply["error"])
    return reply.get("result")


def by_id(replies: Sequence[Any], count: int) -> list[Mapping[str, Any]]:
    """The replies to a batch with ids 0..count-1, in id order (``{}`` for a missing one)."""
    found = {r.get("id"): r for r in replies if isinstance(r, Mapping)}
    return [found.get(i, {}) for i in range(count)]


def is_batch_reply(replies: Any, count: int) -> bool:
    """Whether `replies` answers a batch of `count` requests (a node that refuses
    batches answers one error object, or fewer replies)."""
    return isinstance(replies, list) and len(replies) == count


def call(
    url: str,
    method: str,
    params: Sequence[Any],
    *,
    timeout: float = 5.0,
    client: httpx.Client | None = None,
) -> Any:
    """One JSON-RPC call to the node at `url`; its result. Raises :class:`RpcError`
    for an error answer, :class:`httpx.HTTPError` if the node cannot be reached."""
    body = request(method, params)
    if client is None:
        r = httpx.post(url, json=body, timeout=timeout, trust_env=False)
    else:
        r = client.post(url, json=body)
    r.raise_for_status()
    return result(r.json(), method)


class Connections:
    """Keep-alive HTTP connections to one node, one per thread, for hot paths.

    None of httpx's, requests' or web3's per-call machinery: environment proxy
    lookups alone cost more than a view call on a local node.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self._timeout = timeout
        self._parts = urllib.parse.urlsplit(url)
        self._path = self._parts.path or "/"
        self._local = threading.local()
        self.batches_refused = False
        """Set once the node refused a JSON-RPC batch: requests then go one by one."""

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            kind = (
                http.client.HTTPSConnection
                if self._parts.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = kind(
                self._parts.hostname or "127.0.0.1", self._parts.port, timeout=self._timeout
            )
            self._local.conn = conn
        return conn

    def post(self, body: bytes) -> Any:
        """POST a JSON-RPC body and return the decoded reply. A kept-alive connection
        the node has closed is retried once; :class:`ChainError` if it cannot be reached."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise ChainError(f"the chain at {self.url} answered HTTP {response.status}")
                return json.loads(payload)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise ChainUnreachable(
                        f"cannot reach the chain at {self.url}: {exc}", self.url
                    ) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def batch(self, requests: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Send `requests` (ids 0..n-1) as one batch; each one's reply, in id order."""
        if not requests:
            return []  # nodes refuse an empty batch
        if not self.batches_refused:
            try:
                replies = self.post(json.dumps(list(requests)).encode())
            except ChainUnreachable:
                raise
            except ChainError:
                replies = None  # some providers answer a batch with HTTP 400 or 413
            if is_batch_reply(replies, len(requests)):
                return by_id(replies, len(requests))
            # A node or provider that refuses batches (one error object, an HTTP
            # error, or fewer replies than requests): ask one by one from now on.
            self.batches_refused = True
        singles = [self.post(json.dumps(r).encode()) for r in requests]
        return by_id(singles, len(requests))
