"""The storage client's transport: how one operation talks to the storage nodes.

A :class:`Session` is one operation's HTTP clients (httpx, and the lean HTTP/1.1
client of :mod:`datagora.http1` for share batches to plain-http nodes), its
concurrency bound, its per-node share :class:`Batcher` s and its node bookkeeping
(nodes found dead, each node's batch cap). A node that does not answer usefully
raises :class:`NodeFailure`, so callers try elsewhere. :func:`node_health` asks
every node's ``/health``; :func:`chunk_window` bounds the chunks an upload or
download keeps in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import httpx

from datagora.http1 import Http1Error, Http1Pool
from datagora.storage.auth import DEFAULT_CHAIN_ID, WriteSigner, frame_index_digest
from datagora.storage.batch import MAX_BATCH_SHARES, decode_frame, frame_parts, frame_size
from datagora.storage.errors import BatchFormatError, NodeFailure
from datagora.storage.shares import Share
from datagora.tls import verify_context

__all__ = [
    "Batcher",
    "Progress",
    "Session",
    "chunk_window",
    "healthy_nodes",
    "node_health",
    "open_session",
]

Progress = Callable[[int, int], None]
"""A progress callback: ``(bytes_done, bytes_total)``, called from the caller's thread."""

# Shares travel in batches of _BATCH_MIN_BYTES to _BATCH_BYTES per request, at most
# _BATCH_INFLIGHT batches per node at a time; a smaller batch goes when its
# operation must wait for it, or after a linger (retries, the end of a file).
# Chunks in flight during an upload or download hold at most _WINDOW_BYTES of
# plaintext (times n/k for their shares) and number at most _WINDOW_CHUNKS, so
# memory stays bounded whatever the file size.
_BATCH_BYTES: Final = 4 << 20
_BATCH_MIN_BYTES: Final = 2 << 20
_BATCH_INFLIGHT: Final = 2
_PUT_LINGER: Final = 0.2
_GET_LINGER: Final = 0.002
_WINDOW_BYTES: Final = 16 << 20
_WINDOW_CHUNKS: Final = 32
_I = TypeVar("_I")
_R = TypeVar("_R")


class Batcher(Generic[_I, _R]):
    """Groups one operation's share requests per node into batch requests.

    Items wait in a per-node queue until ``min_bytes`` of them (by ``weight``) are
    queued, ``linger`` seconds have passed since the queue was last sent from, or
    :meth:`flush` is called; a batch then takes up to ``max_bytes`` of them (at
    most :data:`MAX_BATCH_SHARES`). A node has at most ``inflight`` batches under
    way. A failed batch fails each of its items with the same
    :class:`NodeFailure`, so callers keep their per-share fallbacks.
    """

    def __init__(
        self,
        send: Callable[[str, list[_I]], Awaitable[list[_R]]],
        weight: Callable[[_I], int],
        max_bytes: Callable[[str], int],
        min_bytes: int,
        linger: float,
        inflight: int = _BATCH_INFLIGHT,
    ) -> None:
        self._send = send
        self._weight = weight
        self._max_bytes = max_bytes
        self._min_bytes = min_bytes
        self._linger = linger
        self._inflight = inflight
        self._queues: dict[str, deque[tuple[_I, asyncio.Future[_R]]]] = {}
        self._queued: dict[str, int] = {}  # weight queued per node
        self._busy: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, node: str, item: _I) -> _R:
        """The item's result once its batch is answered; raises :class:`NodeFailure`."""
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(node, deque()).append((item, future))
        self._queued[node] = self._queued.get(node, 0) + self._weight(item)
        self._kick(node, force=False)
        return await future

    def flush(self) -> None:
        """Send every queued item now (the caller is about to wait for them)."""
        for node in self._queues:
            self._kick(node, force=True)

    def _expire(self, node: str) -> None:
        del self._timers[node]
        self._kick(node, force=True)

    def _kick(self, node: str, force: bool) -> None:
        queue = self._queues[node]
        sent = False
        while not self._closed and queue and self._busy.get(node, 0) < self._inflight:
            if not force and self._queued[node] < self._min_bytes:
                break
            batch: list[tuple[_I, asyncio.Future[_R]]] = []
            size, cap = 0, self._max_bytes(node)
            while queue and len(batch) < MAX_BATCH_SHARES:
                item, future = queue[0]
                weight = self._weight(item)
                if batch and size + weight > cap:
                    break
                queue.popleft()
                self._queued[node] -= weight
                if future.done():  # its caller gave up (cancelled): do not send it
                    continue
                batch.append((item, future))
                size += weight
            if not batch:
                continue
            self._busy[node] = self._busy.get(node, 0) + 1
            task = asyncio.create_task(self._run(node, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            sent = True
        if sent or not queue:
            timer = self._timers.pop(node, None)
            if timer is not None:
                timer.cancel()
        if queue and not self._closed and node not in self._timers:
            self._timers[node] = asyncio.get_running_loop().call_later(
                self._linger, self._expire, node
            )

    async def _run(self, node: str, batch: list[tuple[_I, asyncio.Future[_R]]]) -> None:
        try:
            results = await self._send(node, [item for item, _ in batch])
        except NodeFailure as failure:
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._busy[node] -= 1
            self._kick(node, force=False)

    async def close(self) -> None:
        """Cancel batches still under way (the operation is over)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Session:
    """One operation's HTTP client, concurrency bound, share batchers and node
    bookkeeping (``nodes`` are the normalised base URLs the operation may use)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        nodes: Sequence[str],
        concurrency: int,
        timeout: float,
        signer: WriteSigner | None = None,
    ) -> None:
        self.http = http
        self.signer = signer
        self.chain_ids: dict[str, int] = {}
        self.nodes: tuple[str, ...] = tuple(nodes)
        self.bulk = Http1Pool(timeout)
        self.slots = asyncio.Semaphore(concurrency)
        self.dead: dict[str, str] = {}
        self.batch_caps: dict[str, int] = {}
        self.puts: Batcher[Share, None] = Batcher(
            self._put_batch,
            lambda share: len(share.data),
            self._batch_cap,
            _BATCH_MIN_BYTES,
            _PUT_LINGER,
        )
        self.gets: Batcher[tuple[bytes, int], bytes | None] = Batcher(
            self._get_batch,
            lambda wanted: wanted[1],
            self._batch_cap,
            _BATCH_MIN_BYTES,
            _GET_LINGER,
        )

    def write_headers(
        self, node: str, method: str, path: str, content: bytes, size: int
    ) -> dict[str, str]:
        """The signature of a write (none without a signer: the node will refuse it)."""
        if self.signer is None:
            return {}
        chain_id = self.chain_ids.get(node, DEFAULT_CHAIN_ID)
        return self.signer.header(node, method, path, content, size, chain_id)

    def _batch_cap(self, node: str) -> int:
        return min(_BATCH_BYTES, self.batch_caps.get(node, _BATCH_BYTES))

    async def close(self) -> None:
        await self.puts.close()
        await self.gets.close()
        await self.bulk.close()

    async def _bulk_request(
        self,
        method: str,
        url: str,
        node: str,
        body: list[bytes],
        content_type: str,
        limit: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A batch request, through the lean HTTP/1.1 client for plain-http nodes
        (see :mod:`datagora.http1`), else through httpx."""
        if not Http1Pool.supports(url):
            if content_type == "application/json":
                payload = json.loads(b"".join(body))
                return await self._request(method, url, node, json=payload, limit=limit)
            return await self._request(method, url, node, body, limit=limit, headers=headers)
        async with self.slots:
            try:
                answer = await self.bulk.request(method, url, body, content_type, limit, headers)
            except Http1Error as exc:
                failure = NodeFailure("timed out" if exc.timed_out else exc.reason, reachable=False)
            else:
                return httpx.Response(answer.status, headers=answer.headers, content=answer.content)
        self.dead.setdefault(node, failure.reason)
        raise failure

    async def _request(
        self,
        method: str,
        url: str,
        node: str,
        content: bytes | list[bytes] | None = None,
        json: Any = None,
        limit: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The response (its body read, refused beyond ``limit`` bytes when given); a
        node that times out or cannot be reached is remembered as dead. ``content``
        given as pieces is sent piece by piece, never joined in memory."""
        body: bytes | AsyncIterator[bytes] | None
        if isinstance(content, list):
            headers = {
                **(headers or {}),
                "content-length": str(sum(len(part) for part in content)),
            }
            body = _pieces(content)
        else:
            body = content
        async with self.slots:
            try:
                if limit is None:
                    return await self.http.request(
                        method, url, content=body, json=json, headers=headers
                    )
                return await self._capped(self.http.build_request(method, url, json=json), limit)
            except httpx.TimeoutException:
                failure = NodeFailure("timed out", reachable=False)
            except httpx.TransportError as exc:
                failure = NodeFailure(f"unreachable ({type(exc).__name__})", reachable=False)
        self.dead.setdefault(node, failure.reason)
        raise failure

    async def _capped(self, request: httpx.Request, limit: int) -> httpx.Response:
        response = await self.http.send(request, stream=True)
        try:
            pieces: list[bytes] = []
            size = 0
            async for piece in response.aiter_bytes():
                pieces.append(piece)
                size += len(piece)
                if size > limit:
                    raise NodeFailure(f"answered with more than the {limit} bytes asked for")
        finally:
            await response.aclose()
        # A response whose body is already read, for the callers' uniform handling.
        content = b"".join(pieces)
        del pieces
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    async def _put_batch(self, node: str, shares: list[Share]) -> list[None]:
        parts = frame_parts([(share.sha256, share.data) for share in shares])
        index = [(share.sha256, len(share.data)) for share in shares]
        signed = self.write_headers(
            node, "PUT", "/shares", frame_index_digest(index), sum(len(p) for p in parts)
        )
        response = await self._bulk_request(
            "PUT", f"{node}/shares", node, parts, "application/octet-stream", headers=signed
        )
        if response.status_code not in (200, 201):
            raise NodeFailure(f"refused a batch of {len(shares)} shares: {_detail(response)}")
        try:
            count = response.json()["count"]
        except (ValueError, KeyError, TypeError):
            count = None
        if count != len(shares):
            raise NodeFailure(f"did not confirm a batch of {len(shares)} shares")
        return [None] * len(shares)

    async def _get_batch(self, node: str, wanted: list[tuple[bytes, int]]) -> list[bytes | None]:
        sizes = [size for _, size in wanted]
        names = json.dumps({"names": [name.hex() for name, _ in wanted]}).encode()
        response = await self._bulk_request(
            "POST",
            f"{node}/shares/batch-get",
            node,
            [names],
            "application/json",
            limit=frame_size(sizes),
        )
        if response.status_code != 200:
            raise NodeFailure(f"POST /shares/batch-get failed: {_detail(response)}")
        try:
            entries = decode_frame(response.content, max(sizes), sum(sizes), len(wanted))
        except BatchFormatError as exc:
            raise NodeFailure(f"served a malformed batch: {exc}") from None
        got: dict[bytes, bytes] = {}
        for name, data in entries:
            got.setdefault(name, data)
        # Bytes under a requested name are checked by the caller against the manifest.
        return [got.get(name) for name, _ in wanted]

    async def put(self, node: str, name: str, data: bytes, kind: str = "shares") -> None:
        signed = self.write_headers(node, "PUT", f"/{kind}/{name}", bytes.fromhex(name), len(data))
        response = await self._request("PUT", f"{node}/{kind}/{name}", node, data, headers=signed)
        if response.status_code not in (200, 201):
            raise NodeFailure(f"refused {kind[:-1]} {name[:16]}…: {_detail(response)}")

    async def get(self, node: str, path: str) -> httpx.Response | None:
        """The response, or None on 404."""
        response = await self._request("GET", f"{node}/{path}", node)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise NodeFailure(f"GET /{path.split('?')[0]} failed: {_detail(response)}")
        return response

    async def head(self, node: str, name: str) -> int | None:
        """The stored size of a blob, or None if the node does not hold it."""
        response = await self._request("HEAD", f"{node}/shares/{name}", node)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise NodeFailure(f"HEAD failed: HTTP {response.status_code}")
        return int(response.headers.get("content-length", "0"))


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"HTTP {response.status_code}" + (f" ({detail})" if isinstance(detail, str) else "")


@contextlib.asynccontextmanager
async def open_session(
    nodes: Sequence[str], concurrency: int, timeout: float, signer: WriteSigner | None = None
) -> AsyncIterator[Session]:
    """A :class:`Session` for one operation against ``nodes`` (normalised base URLs),
    closed (its batches cancelled, its connections closed) on exit; its writes are
    signed by ``signer``."""
    # Room for a kept-alive connection per node and request slot: a pool smaller
    # than that closes idle connections to one node to open others elsewhere.
    limits = httpx.Limits(
        max_connections=None,
        max_keepalive_connections=concurrency * len(nodes),
    )
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), limits=limits, trust_env=False, verify=verify_context()
    ) as http:
        session = Session(http, nodes, concurrency, timeout, signer)
        try:
            yield session
        finally:
            await session.close()


async def node_health(session: Session) -> dict[str, dict[str, Any] | str]:
    """Each of the session's nodes' ``/health`` answer, or the reason it is unhealthy."""

    async def one(node: str) -> dict[str, Any] | str:
        try:
            response = await session.get(node, "health")
        except NodeFailure as failure:
            return failure.reason
        if response is None:
            return "no /health endpoint: not a datagora storage node"
        try:
            body = response.json()
        except ValueError:
            return "malformed /health answer"
        if not isinstance(body, dict) or body.get("status") != "ok":
            return "unhealthy"
        writes = body.get("writes")
        if isinstance(writes, dict) and type(writes.get("chain_id")) is int:
            session.chain_ids[node] = writes["chain_id"]
        return body

    answers = await asyncio.gather(*(one(n) for n in session.nodes))
    return dict(zip(session.nodes, answers, strict=True))


async def healthy_nodes(session: Session) -> list[str]:
    """The session's nodes whose ``/health`` answer is ok, in order."""
    return [n for n, h in (await node_health(session)).items() if isinstance(h, dict)]


async def _pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def chunk_window(chunk_size: int) -> int:
    """How many chunks an upload or download keeps in flight."""
    return max(2, min(_WINDOW_CHUNKS, _WINDOW_BYTES // chunk_size))
