"""The on-chain check a proxy makes before answering every re-encryption request.

A consumer may read a dataset now if it is not on the dataset's deny-list and it
holds either a valid, unexpired order for the dataset's service
(``Datatoken.has_valid_order``) or access through the AccessRegistry (an
unexpired, unrevoked grant, or the allow-list: ``AccessRegistry.has_access``).
Everything is read from the chain at its latest block, so a revocation stops the
next request.

:meth:`AccessGate.check_async` is the proxy's hot path: its views go through the
chain's view batcher (:meth:`Chain.view_batcher`), which on a JSON-RPC node
coalesces the reads of concurrent requests into one JSON-RPC batch at a time.
Each request's reads are still sent after the request arrived, so none is
answered from an older view of the chain than a one-by-one check would use.

A dataset's service may carry an access condition (``AccessRegistry.set_condition``;
format and rules in ``docs/ledger.md``). Its hash is read in the same batch as the
views above; only where one is set does the gate fetch it (once per hash: it is
remembered) and read, in a second batch at the latest block, the block time, the
dataset's state and the token holdings the condition names, then evaluate it. The
condition then replaces the order/grant rule, which it may include as ``order``;
the deny-list always refuses. A refusal names the terms that failed.

Only on a refusal is the reason looked up (the consumer's latest access request,
its order's expiry), to give a one-line answer that tells the consumer nothing it
could not read on chain itself.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Final

from eth_utils.crypto import keccak
from web3.exceptions import Web3Exception

from datagora.errors import DatagoraError
from datagora.ledger import DatasetState, Ledger, ListKind, RequestStatus, conditions
from datagora.ledger.base import ZERO_ADDRESS, ContractWrapper
from datagora.ledger.errors import ChainError
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
_CONDITIONS: Final = 1_000
_BALANCE_OF: Final = keccak(b"balanceOf(address)")[:4]
_OWNER_OF: Final = keccak(b"ownerOf(uint256)")[:4]
_IS_ACTIVE: Final = keccak(b"is_active(uint256)")[:4]
_BLOCK_TIME: Final = keccak(b"block_time()")[:4]


def _view(to: str, selector: bytes, arg: int = 0) -> dict[str, Any]:
    """A view call padded to two argument words (extra calldata is ignored by the
    callee), so that a node's ViewBatch can carry it with the others."""
    data = selector + arg.to_bytes(32, "big") + bytes(32)
    return {"to": to, "data": "0x" + data.hex()}


@dataclass(frozen=True, slots=True)
class _Conditioned:
    """Round one's verdict where a condition is set: evaluate ``condition``."""

    condition: conditions.Condition
    ordered: bool
    allow_listed: bool


class AccessGate:
    """Reads the ledger to decide whether ``consumer`` may read ``dataset`` now."""

    def __init__(self, ledger: Ledger, service_id: int = DEFAULT_SERVICE_ID) -> None:
        self.ledger = ledger
        self.service_id = service_id
        self._datatokens: dict[int, Datatoken] = {}
        self._encoded: dict[tuple[int, str], list[dict[str, Any]]] = {}
        # condition hash -> the condition it is the hash of (None: unreadable)
        self._conditions: dict[int, conditions.Condition | None] = {}
        self._lock = threading.Lock()
        self.views = ledger.chain.view_batcher(ledger.deployment.contracts.get("ViewBatch"))

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
            (access, "condition_hash", (dataset, self.service_id)),
        )

    def _decide(
        self, dataset: int, consumer: str, views: list[int]
    ) -> Decision | _Conditioned | None:
        """The decision the views alone give; None if the refusal needs explaining,
        :class:`_Conditioned` if a condition must be evaluated."""
        listed, ordered, granted, digest = views
        if listed == ListKind.DENY:
            return Decision(
                False, "deny_listed", f"the owner deny-listed {consumer} for dataset {dataset}"
            )
        if digest:
            cond = self._condition(dataset, digest)
            if cond is None:
                return Decision(
                    False,
                    "condition_unreadable",
                    f"the access condition of dataset {dataset} cannot be read",
                )
            return _Conditioned(cond, bool(ordered or granted), listed == ListKind.ALLOW)
        if ordered or granted:
            return _ALLOWED
        return None

    def _condition(self, dataset: int, digest: int) -> conditions.Condition | None:
        """The condition whose hash is ``digest`` (fetched once, then remembered)."""
        with self._lock:
            if digest in self._conditions:
                return self._conditions[digest]
        blob = self.ledger.access.condition_blob(dataset, self.service_id)
        try:
            cond: conditions.Condition | None = conditions.decode(blob)
        except DatagoraError:
            cond = None
        actual = int.from_bytes(keccak(blob), "big")
        with self._lock:
            if len(self._conditions) >= _CONDITIONS:
                self._conditions.clear()
            self._conditions[actual] = cond
        # Changed between the two reads: judge by the newer one, which was just read.
        return cond

    def _condition_calls(
        self, dataset: int, consumer: str, reads: list[conditions.TokenRead]
    ) -> list[dict[str, Any]]:
        access = self.ledger.access.address
        calls = [
            _view(access, _BLOCK_TIME),
            _view(self.ledger.data_nft.address, _IS_ACTIVE, dataset),
        ]
        who = int(consumer, 16)
        for read in reads:
            if isinstance(read, conditions.Erc721) and read.token_id is not None:
                calls.append(_view(read.token, _OWNER_OF, read.token_id))
            else:
                calls.append(_view(read.token, _BALANCE_OF, who))
        return calls

    def _judge(
        self, dataset: int, consumer: str, verdict: _Conditioned, words: list[int | None]
    ) -> Decision:
        now, active, *held = words
        if now is None:
            raise ChainError("the block time could not be read")
        if not active:
            return Decision(False, "dataset_inactive", f"dataset {dataset} is not active")
        reads = conditions.token_reads(verdict.condition)
        holdings: dict[conditions.TokenRead, int] = {}
        for read, value in zip(reads, held, strict=True):
            if value is None:
                continue
            if isinstance(read, conditions.Erc721) and read.token_id is not None:
                value = int(value == int(consumer, 16))
            holdings[read] = value
        facts = conditions.Facts(consumer, now, verdict.ordered, verdict.allow_listed, holdings)
        why = conditions.failure(verdict.condition, facts)
        if why is None:
            return _ALLOWED
        return Decision(
            False, "condition_failed", f"the access condition of dataset {dataset} fails: {why}"
        )

    def _one_by_one(self, calls: list[dict[str, Any]]) -> list[int | None]:
        """Each view alone, None where it failed (a token that is not a contract, an
        NFT id that does not exist): such a term does not hold."""
        out: list[int | None] = []
        for c in calls:
            try:
                out.append(self.ledger.chain.call_views([c])[0])
            except ChainError:
                out.append(None)
        return out

    def _evaluate(self, dataset: int, consumer: str, verdict: _Conditioned) -> Decision:
        calls = self._condition_calls(dataset, consumer, conditions.token_reads(verdict.condition))
        words: list[int | None]
        try:
            words = list(self.ledger.chain.call_views(calls))
        except ChainError:
            words = self._one_by_one(calls)
        return self._judge(dataset, consumer, verdict, words)

    async def _evaluate_async(self, dataset: int, consumer: str, verdict: _Conditioned) -> Decision:
        calls = self._condition_calls(dataset, consumer, conditions.token_reads(verdict.condition))
        words: list[int | None]
        try:
            words = list(await self.views.call(calls))
        except ChainError:
            words = await asyncio.to_thread(self._one_by_one, calls)
        return self._judge(dataset, consumer, verdict, words)

    def check(self, dataset: int, consumer: str) -> Decision:
        """Allowed, or why not. Raises :class:`ChainError` if the chain cannot be read."""
        try:
            token = self._datatoken(dataset)
            if token is None:
                return Decision(False, "no_order", f"dataset {dataset} does not exist")
            views = self._views(*self._calls(token, dataset, consumer))
            decided = self._decide(dataset, consumer, views)
            if isinstance(decided, _Conditioned):
                return self._evaluate(dataset, consumer, decided)
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
        JSON-RPC batch on a node (:meth:`Chain.view_batcher`); the rare slow parts (a
        dataset's first check, explaining a refusal) run in a worker thread."""
        try:
            with self._lock:
                token = self._datatokens.get(dataset)
            if token is None:
                token = await asyncio.to_thread(self._datatoken, dataset)
                if token is None:
                    return Decision(False, "no_order", f"dataset {dataset} does not exist")
            results = await self.views.call(self._prepared(token, dataset, consumer))
            digest = results[3]
            if digest and digest not in self._conditions:  # a new condition: fetch it once
                await asyncio.to_thread(self._condition, dataset, digest)
            decided = self._decide(dataset, consumer, results)
            if isinstance(decided, _Conditioned):
                return await self._evaluate_async(dataset, consumer, decided)
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
        :meth:`Chain.call_views` (one JSON-RPC batch on a node).
        """
        return self.ledger.chain.call_views([c.prepare(f, *args) for c, f, args in calls])

    def _explain(self, token: Datatoken, dataset: int, consumer: str) -> Decision:
        state = self.ledger.data_nft.get_dataset(dataset).state
        if state != DatasetState.ACTIVE:
            # Orders and grants serve only while the dataset is active.
            return Decision(False, "dataset_inactive", f"dataset {dataset} is {state.name.lower()}")
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
