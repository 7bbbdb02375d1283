"""The on-chain check a proxy makes before every re-encryption.

A consumer may read a dataset now if it is not on the dataset's deny-list and it
holds either a valid, unexpired order for the dataset's service
(``Datatoken.has_valid_order``) or access through the AccessRegistry (an
unexpired, unrevoked grant, or the allow-list: ``AccessRegistry.has_access``).
Everything is read from the chain at its latest block, so a revocation stops the
next request.

:meth:`AccessGate.check_async` is the proxy's hot path: the reads of concurrent
requests are coalesced into one JSON-RPC batch at a time (:class:`CallCoalescer`).
Each request's reads are still sent after the request arrived, so none is
answered from an older view of the chain than a one-by-one check would use.

Only on a refusal is the reason looked up (the consumer's latest access request,
its order's expiry), to give a one-line answer that tells the consumer nothing it
could not read on chain itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any, Final

from web3.exceptions import Web3Exception

from datagora.crypto.eip712 import keccak
from datagora.errors import ChainError, DatagoraError
from datagora.http1 import Http1Error, Http1Pool
from datagora.ledger import Ledger, ListKind, RequestStatus
from datagora.ledger.base import ZERO_ADDRESS, ContractWrapper
from datagora.ledger.tokens import Datatoken

__all__ = ["DEFAULT_SERVICE_ID", "AccessGate", "Decision"]

DEFAULT_SERVICE_ID: Final = 0
"""The datatoken service whose orders open a dataset's data (service 0: download)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check: allowed, or a refusal code with a one-line reason."""

    allowed: bool
    code: str = ""
    detail: str = ""


_ALLOWED: Final = Decision(True)
_ENCODED_KEYS: Final = 10_000
_VIEWS_PER_CALL: Final = 384
"""At most this many views in one ViewBatch call (its MAX_CALLS)."""
_READ_SELECTOR: Final = keccak(b"read(uint256[])")[:4]


def _word(result: object) -> int | None:
    """An ``eth_call`` result as its first word, or None unless it holds one (a call to
    an address without code returns ``0x``)."""
    if not isinstance(result, str) or len(result) < 66 or not result.startswith("0x"):
        return None
    try:
        return int(result[2:66], 16)
    except ValueError:
        return None


class CallCoalescer:
    """``eth_call`` groups from concurrent requests, sent as one JSON-RPC batch at a time.

    A group submitted while no batch is under way goes at once; groups submitted
    while one is under way wait for it and then go together in the next. Each group
    gets its own results, or a :class:`ChainError` if its calls (or the batch)
    failed. Bound to the event loop it is first used on.

    With ``view_batch`` (the deployment's ``ViewBatch`` contract) the views of the
    whole batch go as ONE ``eth_call`` to it (up to :data:`_VIEWS_PER_CALL` each),
    all read at the same block: the node's cost per ``eth_call`` is several times
    a view's (anvil: about 125 us a request and 30 us a call, against 3 us a view
    inside one). Only one-word views of two one-word arguments can go that way;
    a batch holding any other call is sent call by call.
    """

    def __init__(self, url: str, timeout: float = 30.0, *, view_batch: str | None = None) -> None:
        self.url = url
        self.view_batch = view_batch
        self._pool = Http1Pool(timeout)
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[list[int]]]] = []
        self._sending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None  # a reference keeps the task alive
        self._quads: dict[tuple[str, str], bytes | None] = {}
        self.batches = 0
        self.groups = 0

    async def call(self, calls: list[dict[str, Any]]) -> list[int]:
        """Each call's result (one word, as an integer), read at the chain's latest block."""
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

    def _quad(self, call: dict[str, Any]) -> bytes | None:
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

    def _requests(self, flat: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
        """The JSON-RPC requests for ``flat``; True if they go through ViewBatch."""
        if self.view_batch is not None:
            quads = [self._quad(c) for c in flat]
            if all(q is not None for q in quads):
                requests: list[dict[str, Any]] = []
                for start in range(0, len(quads), _VIEWS_PER_CALL):
                    chunk = quads[start : start + _VIEWS_PER_CALL]
                    data = (
                        _READ_SELECTOR
                        + (32).to_bytes(32, "big")
                        + (4 * len(chunk)).to_bytes(32, "big")
                        + b"".join(q for q in chunk if q is not None)
                    )
                    call = {"to": self.view_batch, "data": "0x" + data.hex()}
                    requests.append(
                        {"jsonrpc": "2.0", "id": len(requests), "method": "eth_call",
                         "params": [call, "latest"]}
                    )  # fmt: skip
                return requests, True
        return [
            {"jsonrpc": "2.0", "id": i, "method": "eth_call", "params": [c, "latest"]}
            for i, c in enumerate(flat)
        ], False

    @staticmethod
    def _results(replies: list[Any], count: int, batched: bool) -> list[int | None]:
        """Each call's word, or None where it failed, from the batch's replies."""
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        if not batched:
            out: list[int | None] = []
            for i in range(count):
                reply = by_id.get(i, {})
                result = reply.get("result") if "error" not in reply else None
                out.append(_word(result))
            return out
        words: list[int | None] = []
        for i in range((count + _VIEWS_PER_CALL - 1) // _VIEWS_PER_CALL):
            calls = min(_VIEWS_PER_CALL, count - i * _VIEWS_PER_CALL)
            result = by_id.get(i, {}).get("result")
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
        self, groups: list[tuple[list[dict[str, Any]], asyncio.Future[list[int]]]]
    ) -> None:
        flat = [call for calls, _ in groups for call in calls]
        requests, batched = self._requests(flat)
        body = json.dumps(requests).encode()
        self.batches += 1
        self.groups += len(groups)
        try:
            answer = await self._pool.request("POST", self.url, [body], "application/json")
            if answer.status != 200:
                raise ChainError(f"the chain at {self.url} answered HTTP {answer.status}")
            replies = json.loads(answer.content)
            if not isinstance(replies, list):
                raise ChainError(f"the chain refused a batch of calls: {str(replies)[:200]}")
            words = self._results(replies, len(flat), batched)
        except (Http1Error, ValueError, ChainError) as exc:
            failure = (
                exc
                if isinstance(exc, ChainError)
                else ChainError(f"cannot reach the chain at {self.url}: {exc}")
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


class AccessGate:
    """Reads the ledger to decide whether ``consumer`` may read ``dataset`` now."""

    def __init__(self, ledger: Ledger, service_id: int = DEFAULT_SERVICE_ID) -> None:
        self.ledger = ledger
        self.service_id = service_id
        self._datatokens: dict[int, Datatoken] = {}
        self._encoded: dict[tuple[int, str], list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        url = getattr(ledger.chain, "url", None)
        self.coalescer = (
            CallCoalescer(url, view_batch=ledger.deployment.contracts.get("ViewBatch"))
            if isinstance(url, str)
            and hasattr(ledger.chain, "call_batch")
            and Http1Pool.supports(url)
            else None
        )

    def _datatoken(self, dataset: int) -> Datatoken | None:
        # A dataset's datatoken is fixed when it is published: safe to remember.
        with self._lock:
            cached = self._datatokens.get(dataset)
        if cached is not None:
            return cached
        address = self.ledger.data_nft.datatoken_of(dataset)
        if address == ZERO_ADDRESS:
            return None
        token = Datatoken(self.ledger.chain, address)
        with self._lock:
            self._datatokens[dataset] = token
        return token

    def _calls(
        self, token: Datatoken, dataset: int, consumer: str
    ) -> tuple[tuple[ContractWrapper, str, tuple[Any, ...]], ...]:
        access = self.ledger.access
        return (
            (access, "list_of", (dataset, consumer)),
            (token, "has_valid_order", (consumer, self.service_id)),
            (access, "has_access", (dataset, consumer)),
        )

    def _decide(self, dataset: int, consumer: str, views: list[int]) -> Decision | None:
        """The decision the views alone give; None if the refusal needs explaining."""
        listed, ordered, granted = views
        if listed == ListKind.DENY:
            return Decision(
                False, "deny_listed", f"the owner deny-listed {consumer} for dataset {dataset}"
            )
        if ordered or granted:
            return _ALLOWED
        return None

    def check(self, dataset: int, consumer: str) -> Decision:
        """Allowed, or why not. Raises :class:`ChainError` if the chain cannot be read."""
        try:
            token = self._datatoken(dataset)
            if token is None:
                return Decision(False, "no_order", f"dataset {dataset} does not exist")
            views = self._views(*self._calls(token, dataset, consumer))
            decided = self._decide(dataset, consumer, views)
            return decided if decided is not None else self._explain(token, dataset, consumer)
        except ChainError:
            raise
        except (DatagoraError, OSError, Web3Exception) as exc:
            raise ChainError(f"the ledger could not be read ({type(exc).__name__})") from None

    def _prepared(self, token: Datatoken, dataset: int, consumer: str) -> list[dict[str, Any]]:
        # The ABI-encoded views of a (dataset, consumer) never change: encode once.
        key = (dataset, consumer)
        with self._lock:
            cached = self._encoded.get(key)
        if cached is None:
            cached = [c.prepare(f, *args) for c, f, args in self._calls(token, dataset, consumer)]
            with self._lock:
                if len(self._encoded) >= _ENCODED_KEYS:
                    self._encoded.clear()
                self._encoded[key] = cached
        return cached

    async def check_async(self, dataset: int, consumer: str) -> Decision:
        """:meth:`check` for an event loop: the views of concurrent checks share one
        JSON-RPC batch (:class:`CallCoalescer`); the rare slow parts (a dataset's
        first check, explaining a refusal) run in a worker thread."""
        if self.coalescer is None:
            return await asyncio.to_thread(self.check, dataset, consumer)
        try:
            with self._lock:
                token = self._datatokens.get(dataset)
            if token is None:
                token = await asyncio.to_thread(self._datatoken, dataset)
                if token is None:
                    return Decision(False, "no_order", f"dataset {dataset} does not exist")
            results = await self.coalescer.call(self._prepared(token, dataset, consumer))
            decided = self._decide(dataset, consumer, results)
        except ChainError:
            raise
        except (DatagoraError, OSError, Web3Exception, ValueError) as exc:
            raise ChainError(f"the ledger could not be read ({type(exc).__name__})") from None
        if decided is not None:
            return decided
        return await asyncio.to_thread(self._explained, token, dataset, consumer)

    def _explained(self, token: Datatoken, dataset: int, consumer: str) -> Decision:
        try:
            return self._explain(token, dataset, consumer)
        except ChainError:
            raise
        except (DatagoraError, OSError, Web3Exception) as exc:
            raise ChainError(f"the ledger could not be read ({type(exc).__name__})") from None

    def _views(self, *calls: tuple[ContractWrapper, str, tuple[Any, ...]]) -> list[int]:
        """Views returning one word each, as integers, by bare ``eth_call``s.

        This is the hot path of every re-encryption: web3's contract-call stack adds
        two ``eth_chainId`` round trips and validation to each view (~20 ms under
        load), and even its bare provider spends more in ``requests`` than anvil
        spends answering, so calls are encoded by the wrappers and sent through
        :meth:`RpcChain.call_batch` in one JSON-RPC batch.
        """
        chain: Any = self.ledger.chain
        if not hasattr(chain, "call_batch"):
            # An in-process chain: no round trips to save, use the typed wrappers.
            return [int(getattr(c, f)(*args)) for c, f, args in calls]
        results = chain.call_batch([c.prepare(f, *args) for c, f, args in calls])
        return [int(r, 16) for r in results]

    def _explain(self, token: Datatoken, dataset: int, consumer: str) -> Decision:
        request_id = self.ledger.access.latest_request(dataset, consumer)
        if request_id:
            req = self.ledger.access.get_request(request_id)
            status = req.status
            if status == RequestStatus.REVOKED:
                return Decision(
                    False, "grant_revoked", f"the owner revoked grant {request_id} of {consumer}"
                )
            if status == RequestStatus.DENIED:
                return Decision(
                    False,
                    "request_denied",
                    f"the owner denied request {request_id} of {consumer}",
                )
        order_expiry = token.order_expires_at(consumer, self.service_id)
        if order_expiry:
            return Decision(
                False,
                "order_expired",
                f"{consumer}'s order for dataset {dataset} expired at {order_expiry}",
            )
        if request_id:
            if req.status == RequestStatus.GRANTED:
                return Decision(
                    False, "grant_expired", f"grant {request_id} of {consumer} has expired"
                )
            if req.status == RequestStatus.PENDING:
                return Decision(
                    False,
                    "request_pending",
                    f"request {request_id} of {consumer} awaits the owner's decision",
                )
        return Decision(
            False, "no_order", f"{consumer} has no order or grant for dataset {dataset}"
        )
