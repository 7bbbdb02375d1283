"""Typed wrapper of the AccessRegistry: requests, grants, denials, revocations, lists."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from datagora.ledger import conditions
from datagora.ledger.base import ContractWrapper, Tx, check_address
from datagora.ledger.errors import ChainError, InvalidArgument
from datagora.ledger.tokens import check_consumer_key

MAX_TEXT = 256
_BALANCE_OF = keccak(b"balanceOf(address)")[:4]
_OWNER_OF = keccak(b"ownerOf(uint256)")[:4]


class RequestStatus(enum.IntEnum):
    PENDING = 1
    GRANTED = 2
    DENIED = 3
    REVOKED = 4


class ListKind(enum.IntEnum):
    NONE = 0
    ALLOW = 1
    DENY = 2


@dataclass(frozen=True)
class AccessRequest:
    request_id: int
    dataset: int
    consumer: str
    status: RequestStatus
    expires_at: int


def _text(value: str, what: str) -> str:
    if len(value.encode()) > MAX_TEXT:
        raise InvalidArgument(f"{what} too long", f"{what} is limited to {MAX_TEXT} bytes")
    return value


class AccessRegistry(ContractWrapper):
    contract_name = "AccessRegistry"

    def request(
        self, account: LocalAccount, dataset: int, purpose: str, consumer_key: bytes = b""
    ) -> tuple[int, Tx]:
        """File a request for `dataset`; returns the request id."""
        receipt = self._transact(
            account, "request", dataset, _text(purpose, "purpose"), check_consumer_key(consumer_key)
        )
        (ev,) = self._decode(receipt, "AccessRequested")
        return int(ev["request_id"]), Tx.of(receipt)

    def grant(self, account: LocalAccount, request_id: int, expires_at: int) -> Tx:
        return Tx.of(self._transact(account, "grant", request_id, expires_at))

    def deny(self, account: LocalAccount, request_id: int, reason: str) -> Tx:
        return Tx.of(self._transact(account, "deny", request_id, _text(reason, "reason")))

    def revoke(self, account: LocalAccount, request_id: int) -> Tx:
        return Tx.of(self._transact(account, "revoke", request_id))

    def set_list(self, account: LocalAccount, dataset: int, who: str, kind: ListKind) -> Tx:
        return Tx.of(
            self._transact(account, "set_list", dataset, check_address(who, "account"), int(kind))
        )

    def restrict_sales(self, account: LocalAccount, dataset: int, restricted: bool) -> Tx:
        """Sell (exchange, dispenser, orders) only to allow-listed accounts, or to anyone
        not deny-listed again (the dataset's controller only)."""
        return Tx.of(self._transact(account, "restrict_sales", dataset, restricted))

    def set_delegate(self, account: LocalAccount, delegate: str, allowed: bool) -> Tx:
        """Authorise (or revoke) `delegate` as `account`'s agent key: it may sign key
        fragment deliveries for `account`'s datasets, and nothing else."""
        return Tx.of(
            self._transact(account, "set_delegate", check_address(delegate, "delegate"), allowed)
        )

    def set_condition(
        self,
        account: LocalAccount,
        dataset: int,
        service: int,
        condition: conditions.Condition | str | None,
    ) -> Tx:
        """Set the access condition of `dataset`'s `service` (a tree, or its text in the
        grammar of ``docs/ledger.md``), or clear it (None). The dataset's controller only.
        A malformed condition raises :class:`InvalidArgument` and nothing is sent."""
        if isinstance(condition, str):
            condition = conditions.parse(condition)
        blob = b"" if condition is None else conditions.encode(condition)
        if not 0 <= service < 2**256:
            raise InvalidArgument("bad service", "a service id is a uint256")
        return Tx.of(self._transact(account, "set_condition", dataset, service, blob))

    def condition_hash(self, dataset: int, service: int) -> bytes:
        """keccak-256 of the condition's encoding (32 zero bytes: none)."""
        return bytes(self._view("condition_hash", dataset, service))

    def condition_blob(self, dataset: int, service: int) -> bytes:
        """The encoded condition as stored (empty: none)."""
        return bytes(self._view("condition_of", dataset, service))

    def condition_of(self, dataset: int, service: int) -> conditions.Condition | None:
        """The access condition of `dataset`'s `service`, or None (the order/grant rule).
        :class:`InvalidArgument` if what is stored cannot be read."""
        blob = self.condition_blob(dataset, service)
        return None if not blob else conditions.decode(blob)

    def condition_failure(
        self, dataset: int, service: int, consumer: str, ordered: bool
    ) -> str | None:
        """None if the condition of `dataset`'s `service` holds for `consumer` now (or none
        is set), else why not. `ordered`: whether the caller found the order/grant rule
        met (the ``order`` term). Views one by one: for checks off the hot path (a compute
        node admitting a job); proxies batch the same reads (``sharing/gate.py``)."""
        blob = self.condition_blob(dataset, service)
        if not blob:
            return None
        try:
            cond = conditions.decode(blob)
        except InvalidArgument:
            return "the access condition cannot be read"
        holdings: dict[conditions.TokenRead, int] = {}
        who = int(consumer, 16)
        for read in conditions.token_reads(cond):
            by_id = isinstance(read, conditions.Erc721) and read.token_id is not None
            selector = _OWNER_OF if by_id else _BALANCE_OF
            arg = read.token_id if by_id and isinstance(read, conditions.Erc721) else who
            data = selector + int(arg or 0).to_bytes(32, "big")
            try:
                (value,) = self.chain.call_views([{"to": read.token, "data": "0x" + data.hex()}])
            except ChainError:
                continue  # a failed read fails its term
            holdings[read] = int(value == who) if by_id else value
        facts = conditions.Facts(
            consumer,
            int(self._view("block_time")),
            ordered,
            self.list_of(dataset, consumer) == ListKind.ALLOW,
            holdings,
        )
        return conditions.failure(cond, facts)

    def is_delegate(self, owner: str, delegate: str) -> bool:
        """True if `owner` authorises `delegate` to delegate fragments for it now."""
        return bool(self._view("is_delegate", owner, delegate))

    def sales_restricted(self, dataset: int) -> bool:
        return bool(self._view("sales_restricted", dataset))

    def list_of(self, dataset: int, who: str) -> ListKind:
        return ListKind(int(self._view("list_of", dataset, who)))

    def get_request(self, request_id: int) -> AccessRequest:
        dataset, consumer, status, expires_at = self._view("get_request", request_id)
        return AccessRequest(
            request_id, int(dataset), str(consumer), RequestStatus(status), int(expires_at)
        )

    def request_count(self) -> int:
        return int(self._view("request_count"))

    def latest_request(self, dataset: int, consumer: str) -> int:
        """The id of ``consumer``'s latest access request for ``dataset`` (0: none)."""
        return int(self._view("latest_request", dataset, consumer))

    def has_access(self, dataset: int, consumer: str) -> bool:
        return bool(self._view("has_access", dataset, consumer))

    def live_grants(self, dataset: int, consumer: str) -> list[int]:
        """The consumer's unrevoked, unexpired grants (request ids) for `dataset`."""
        return [int(r) for r in self._view("live_grants", dataset, consumer)]


@dataclass(frozen=True)
class LogAnchor:
    proxy: str
    digest: bytes
    entries: int
    block_number: int


class AccessLog(ContractWrapper):
    """Anchors of the proxies' append-only access logs."""

    contract_name = "AccessLog"

    def anchor(self, account: LocalAccount, digest: bytes, entries: int) -> tuple[int, Tx]:
        """Anchor `account`'s log digest after `entries` entries; returns the sequence number."""
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise InvalidArgument("bad digest", "a log digest is 32 bytes")
        receipt = self._transact(account, "anchor", digest, entries)
        (ev,) = self._decode(receipt, "AccessLogAnchored")
        return int(ev["sequence"]), Tx.of(receipt)

    def latest(self, proxy: str) -> LogAnchor:
        digest, entries, block = self._view("latest", check_address(proxy, "proxy"))
        return LogAnchor(proxy, bytes(digest), int(entries), int(block))

    def anchor_count(self, proxy: str) -> int:
        return int(self._view("anchor_count", proxy))
