"""The on-chain check a proxy makes before every re-encryption.

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

Only on a refusal is the reason looked up (the consumer's latest access request,
its order's expiry), to give a one-line answer that tells the consumer nothing it
could not read on chain itself.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Final

from web3.exceptions import Web3Exception

from datagora.errors import DatagoraError
from datagora.ledger import DatasetState, Ledger, ListKind, RequestStatus
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


class AccessGate:
    """Reads the ledger to decide whether ``consumer`` may read ``dataset`` now."""

    def __init__(self, ledger: Ledger, service_id: int = DEFAULT_SERVICE_ID) -> None:
        self.ledger = ledger
        self.service_id = service_id
        self._datatokens: dict[int, Datatoken] = {}
        self._encoded: dict[tuple[int, str], list[dict[str, Any]]] = {}
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
