"""Batched view calls: many one-word views read together at the chain's latest block.

A proxy checks the ledger before every re-encryption, so these reads are a hot
path. :class:`ViewBatcher` is what a caller gets from :meth:`Chain.view_batcher`:
on a JSON-RPC node a :class:`CallCoalescer` that sends the reads of concurrent
requests as one JSON-RPC batch at a time; on an in-process chain, where there is
no round trip to save, :class:`ThreadedViews` reads them call by call in a
worker thread.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from eth_utils.crypto import keccak

from datagora.http1 import Http1Error, Http1Pool
from datagora.ledger import jsonrpc
from datagora.ledger.errors import ChainError, ChainUnreachable

__all__ = ["VIEWS_PER_CALL", "CallCoalescer", "ThreadedViews", "ViewBatcher", "word"]

ViewCall = Mapping[str, Any]
"""One view call, ``{"to": address, "data": calldata}`` as ``ContractWrapper.prepare`` gives it."""

_ENCODED_KEYS: Final = 10_000
VIEWS_PER_CALL: Final = 384
"""At most this many views in one ViewBatch call (its MAX_CALLS)."""
_READ_SELECTOR: Final = keccak(b"read(uint256[])")[:4]


def word(result: object) -> int | None:
    """An ``eth_call`` result as its first word, or None unless it holds one (a call to
    an address without code returns ``0x``)."""
    if not isinstance(result, str) or len(result) < 66 or not result.startswith("0x"):
        return None
    try:
        return int(result[2:66], 16)
    except ValueError:
        return None


class ViewBatcher(ABC):
    """Reads groups of one-word views for an event loop; ``batches`` and ``groups``
    count how many reads went to the chain and how many groups they answered."""

    def __init__(self) -> None:
        self.batches = 0
        self.groups = 0

    @abstractmethod
    async def call(self, calls: Sequence[ViewCall]) -> list[int]:
        """Each call's result (one word, as an integer), read at the chain's latest
        block; :class:`ChainError` if any of them failed."""


class ThreadedViews(ViewBatcher):
    """Each group read by a blocking reader (the chain's ``call_views``) in a worker thread."""

    def __init__(self, read: Callable[[Sequence[ViewCall]], list[int]]) -> None:
        super().__init__()
        self._read = read

    async def call(self, calls: Sequence[ViewCall]) -> list[int]:
        self.batches += 1
        self.groups += 1
        return await asyncio.to_thread(self._read, calls)


class CallCoalescer(ViewBatcher):
    """``eth_call`` groups from concurrent requests, sent as one JSON-RPC batch at a time.

    A group submitted while no batch is under way goes at once; groups submitted
    while one is under way wait for it and then go together in the next. Each group
    gets its own results, or a :class:`ChainError` if its calls (or the batch)
    failed. Bound to the event loop it is first used on. Each request's reads are
    still sent after the request arrived, so none is answered from an older view
    of the chain than a one-by-one read would use.

    With ``view_batch`` (the deployment's ``ViewBatch`` contract) the views of the
    whole batch go as ONE ``eth_call`` to it (up to :data:`VIEWS_PER_CALL` each),
    all read at the same block: the node's cost per ``eth_call`` is several times
    a view's (anvil: about 125 us a request and 30 us a call, against 3 us a view
    inside one). Only one-word views of two one-word arguments can go that way;
    a batch holding any other call is sent call by call.
    """

    def __init__(self, url: str, timeout: float = 30.0, *, view_batch: str | None = None) -> None:
        super().__init__()
        self.url = url
        self.view_batch = view_batch
        self._pool = Http1Pool(timeout)
        self._waiting: list[tuple[Sequence[ViewCall], asyncio.Future[list[int]]]] = []
        self._sending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None  # a reference keeps the task alive
        self._quads: dict[tuple[str, str], bytes | None] = {}
        self.batches_refused = False
        """Set once the node refused a JSON-RPC batch: calls then go one by one."""

    async def call(self, calls: Sequence[ViewCall]) -> list[int]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop: nothing carries over
            self._loop, self._waiting, self._sending = loop, [], False
        future: asyncio.Future[list[int]] = loop.create_future()
        self._waiting.append((calls, future))
        if not self._sending:
            self._sending = True
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                groups, self._waiting = self._waiting, []
                await self._send(groups)
        finally:
            self._sending = False

    async def _post(self, body: Any) -> Any:
        return await self._pool.request(
            "POST", self.url, [json.dumps(body).encode()], "application/json"
        )

    def _quad(self, call: ViewCall) -> bytes | None:
        """``call`` as ViewBatch's four words, or None if it is not a two-word view call."""
        key = (call["to"], call["data"])
        quad = self._quads.get(key, b"")
        if quad == b"":
            data = bytes.fromhex(key[1][2:])
            quad = (
                bytes(12) + bytes.fromhex(key[0][2:]) + data[:4] + bytes(28) + data[4:]
                if len(data) == 68 and len(key[0]) == 42
                else None
            )
            if len(self._quads) >= _ENCODED_KEYS:
                self._quads.clear()
            self._quads[key] = quad
        return quad

    def _requests(self, flat: list[ViewCall]) -> tuple[list[dict[str, Any]], bool]:
        """The JSON-RPC requests for ``flat``; True if they go through ViewBatch."""
        if self.view_batch is not None:
            quads = [self._quad(c) for c in flat]
            if all(q is not None for q in quads):
                calls: list[list[Any]] = []
                for start in range(0, len(quads), VIEWS_PER_CALL):
                    chunk = quads[start : start + VIEWS_PER_CALL]
                    data = (
                        _READ_SELECTOR
                        + (32).to_bytes(32, "big")
                        + (4 * len(chunk)).to_bytes(32, "big")
                        + b"".join(q for q in chunk if q is not None)
                    )
                    calls.append([{"to": self.view_batch, "data": "0x" + data.hex()}, "latest"])
                return jsonrpc.batch("eth_call", calls), True
        return jsonrpc.batch("eth_call", [[c, "latest"] for c in flat]), False

    @staticmethod
    def _results(replies: list[Any], count: int, batched: bool) -> list[int | None]:
        """Each call's word, or None where it failed, from the batch's replies."""
        if not batched:
            return [
                word(reply.get("result") if "error" not in reply else None)
                for reply in jsonrpc.by_id(replies, count)
            ]
        calls_of = (count + VIEWS_PER_CALL - 1) // VIEWS_PER_CALL
        words: list[int | None] = []
        for i, reply in enumerate(jsonrpc.by_id(replies, calls_of)):
            calls = min(VIEWS_PER_CALL, count - i * VIEWS_PER_CALL)
            result = reply.get("result")
            raw = bytes.fromhex(result[2:]) if isinstance(result, str) else b""
            if len(raw) != 64 + 64 * calls or int.from_bytes(raw[32:64], "big") != 2 * calls:
                words.extend([None] * calls)  # the whole read failed (or no ViewBatch there)
                continue
            for j in range(calls):
                at = 64 + 64 * j
                ok = raw[at + 31] == 1
                words.append(int.from_bytes(raw[at + 32 : at + 64], "big") if ok else None)
        return words

    async def _send(
        self, groups: list[tuple[Sequence[ViewCall], asyncio.Future[list[int]]]]
    ) -> None:
        flat = [call for calls, _ in groups for call in calls]
        requests, batched = self._requests(flat)
        self.batches += 1
        self.groups += len(groups)
        try:
            replies: Any = None
            if not self.batches_refused:
                answer = await self._post(requests)
                if answer.status == 200:
                    replies = json.loads(answer.content)
                elif answer.status not in (400, 413):
                    raise ChainError(f"the chain at {self.url} answered HTTP {answer.status}")
                if not jsonrpc.is_batch_reply(replies, len(requests)):
                    # The node refuses JSON-RPC batches: one request at a time from now.
                    self.batches_refused = True
            if self.batches_refused:
                replies = []
                for request in requests:
                    answer = await self._post(request)
                    if answer.status != 200:
                        raise ChainError(f"the chain at {self.url} answered HTTP {answer.status}")
                    replies.append(json.loads(answer.content))
            words = self._results(replies, len(flat), batched)
        except (Http1Error, ValueError, ChainError) as exc:
            failure = (
                exc
                if isinstance(exc, ChainError)
                else ChainUnreachable(f"cannot reach the chain at {self.url}: {exc}", self.url)
            )
            for _, future in groups:
                if not future.done():
                    future.set_exception(failure)
            return
        start = 0
        for calls, future in groups:
            mine = words[start : start + len(calls)]
            start += len(calls)
            if future.done():
                continue
            values = [w for w in mine if w is not None]
            if len(values) != len(mine):
                future.set_exception(ChainError("a view of the ledger failed"))
            else:
                future.set_result(values)
