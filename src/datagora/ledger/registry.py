"""Typed wrapper of the NodeRegistry: who serves datagora, with what stake.

Storage, proxy and compute nodes register their roles, HTTP endpoint, Umbral
public key and a stake in the market currency; clients discover them here
(:meth:`NodeRegistry.nodes`) instead of from a static list of URLs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ContractWrapper, Tx, check_address
from datagora.ledger.errors import InvalidArgument, NotFound
from datagora.ledger.tokens import MarketToken

MAX_ENDPOINT = 256
UMBRAL_PK_SIZE = 33
DEFAULT_UNBONDING_DELAY = 7 * 86_400
DEFAULT_MIN_STAKE = 10 * 10**18  # per role, in market-token base units


class Role(enum.IntFlag):
    """A node's roles: a bitmask, as on chain."""

    STORAGE = 1
    PROXY = 2
    COMPUTE = 4

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> Role:
        """``"storage,proxy"`` (or a list of names) as a bitmask; InvalidArgument if unknown."""
        names = text.split(",") if isinstance(text, str) else list(text)
        roles = cls(0)
        for name in (n.strip().lower() for n in names):
            if not name:
                continue
            try:
                roles |= cls[name.upper()]
            except KeyError:
                raise InvalidArgument(
                    "unknown role", f"unknown role {name!r} (storage, proxy or compute)"
                ) from None
        if not roles:
            raise InvalidArgument("no role", "name at least one role: storage, proxy, compute")
        return roles

    def names(self) -> list[str]:
        return [r.name.lower() for r in Role if r in self and r.name]


class NodeState(enum.IntEnum):
    NONE = 0
    ACTIVE = 1
    LEAVING = 2
    GONE = 3


@dataclass(frozen=True)
class NodeInfo:
    """One node's record on chain."""

    address: str
    roles: Role
    endpoint: str
    umbral_pk: bytes
    stake: int
    state: NodeState
    unbond_at: int

    def has(self, role: Role) -> bool:
        return role in self.roles


def check_endpoint(endpoint: str) -> str:
    """An http(s) URL with a host and no credentials, query or fragment, without a
    trailing slash; InvalidArgument otherwise. The contract checks the scheme and
    length; this client checks the rest before sending anything."""
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidArgument("bad endpoint", "the endpoint must be an http(s) URL")
    if len(endpoint.encode()) > MAX_ENDPOINT:
        raise InvalidArgument("bad endpoint", f"an endpoint is limited to {MAX_ENDPOINT} bytes")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in endpoint):
        raise InvalidArgument("bad endpoint", "an endpoint has no spaces or control characters")
    try:
        parts = urlsplit(endpoint)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        msg = f"the endpoint is not a URL: {endpoint!r} ({exc})"
        raise InvalidArgument("bad endpoint", msg) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"the endpoint is not an http(s) URL with a host: {endpoint!r}"
        raise InvalidArgument("bad endpoint", msg)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidArgument("bad endpoint", "an endpoint has no credentials, query or fragment")
    return endpoint.rstrip("/")


def check_umbral_pk(key: bytes) -> bytes:
    key = bytes(key)
    if key and (len(key) != UMBRAL_PK_SIZE or key[0] not in (2, 3)):
        raise InvalidArgument(
            "bad umbral key", "an Umbral public key is 33 bytes, compressed (02/03 prefix)"
        )
    return key


def _well_formed(endpoint: str) -> bool:
    try:
        check_endpoint(endpoint)
    except InvalidArgument:
        return False  # the contract checks only the scheme and length
    return True


class NodeRegistry(ContractWrapper):
    contract_name = "NodeRegistry"
    _token: MarketToken | None = None

    # -- a node's own calls ------------------------------------------------------------

    def register(
        self,
        account: LocalAccount,
        roles: Role | int,
        endpoint: str,
        stake: int,
        umbral_pk: bytes = b"",
    ) -> Tx:
        """Register `account` as a node, approving the registry for `stake` if needed."""
        roles = Role(int(roles))
        if not roles or int(roles) & ~7:
            raise InvalidArgument("unknown roles", "roles are a mask of storage, proxy, compute")
        endpoint = check_endpoint(endpoint)
        umbral_pk = check_umbral_pk(umbral_pk)
        if stake < 0:
            raise InvalidArgument("bad amount", "the stake cannot be negative")
        self._allow(account, stake)
        return Tx.of(self._transact(account, "register", int(roles), endpoint, umbral_pk, stake))

    def update(self, account: LocalAccount, endpoint: str, umbral_pk: bytes | None = None) -> Tx:
        """Change the node's endpoint (and Umbral key; None keeps the current one)."""
        endpoint = check_endpoint(endpoint)
        if umbral_pk is None:
            umbral_pk = self.node(account.address).umbral_pk
        return Tx.of(self._transact(account, "update", endpoint, check_umbral_pk(umbral_pk)))

    def add_stake(self, account: LocalAccount, amount: int) -> Tx:
        self._allow(account, amount)
        return Tx.of(self._transact(account, "add_stake", amount))

    def leave(self, account: LocalAccount) -> tuple[int, Tx]:
        """Start unbonding; return when the stake can be withdrawn (a timestamp)."""
        receipt = self._transact(account, "leave")
        (ev,) = self._decode(receipt, "Leaving")
        return int(ev["unbond_at"]), Tx.of(receipt)

    def withdraw(self, account: LocalAccount) -> tuple[int, Tx]:
        """After the delay, take back the stake left; return the amount."""
        receipt = self._transact(account, "withdraw")
        (ev,) = self._decode(receipt, "Withdrawn")
        return int(ev["amount"]), Tx.of(receipt)

    def _allow(self, account: LocalAccount, amount: int) -> None:
        if amount <= 0:
            return
        if self._token is None:
            self._token = MarketToken(self.chain, self.token())
        if self._token.allowance(account.address, self.address) < amount:
            self._token.approve(account, self.address, amount)

    # -- slashers and admin ----------------------------------------------------------

    def slash(self, account: LocalAccount, node: str, amount: int, to: str) -> tuple[int, Tx]:
        """Take up to `amount` of `node`'s stake to `to` (approved slashers only)."""
        receipt = self._transact(
            account, "slash", check_address(node, "node"), amount, check_address(to, "recipient")
        )
        (ev,) = self._decode(receipt, "Slashed")
        return int(ev["amount"]), Tx.of(receipt)

    def set_slasher(self, admin: LocalAccount, slasher: str, allowed: bool) -> Tx:
        return Tx.of(
            self._transact(admin, "set_slasher", check_address(slasher, "slasher"), allowed)
        )

    def set_min_stake(self, admin: LocalAccount, role: Role, amount: int) -> Tx:
        return Tx.of(self._transact(admin, "set_min_stake", int(role), amount))

    def set_unbonding_delay(self, admin: LocalAccount, seconds: int) -> Tx:
        return Tx.of(self._transact(admin, "set_unbonding_delay", seconds))

    # -- views -----------------------------------------------------------------------

    def token(self) -> str:
        return str(self._view("TOKEN"))

    def is_slasher(self, account: str) -> bool:
        return bool(self._view("slasher", check_address(account, "account")))

    def min_stake(self, role: Role) -> int:
        return int(self._view("min_stake", int(role)))

    def required_stake(self, roles: Role | int) -> int:
        return int(self._view("required_stake", int(roles)))

    def unbonding_delay(self) -> int:
        return int(self._view("unbonding_delay"))

    def is_active(self, node: str, role: Role | int) -> bool:
        return bool(self._view("is_active", check_address(node, "node"), int(role)))

    def stake_of(self, node: str) -> int:
        return int(self._view("stake_of", check_address(node, "node")))

    def node(self, address: str) -> NodeInfo:
        """The record of `address`; NotFound if it never registered."""
        address = check_address(address, "node")
        roles, endpoint, pk, stake, state, unbond_at = self._view("nodes", address)
        if int(state) == NodeState.NONE:
            raise NotFound("no such node", f"{address} never registered as a node")
        return NodeInfo(
            address=address,
            roles=Role(int(roles)),
            endpoint=str(endpoint),
            umbral_pk=bytes(pk),
            stake=int(stake),
            state=NodeState(int(state)),
            unbond_at=int(unbond_at),
        )

    def nodes(self, role: Role | int | None = None, active_only: bool = True) -> list[NodeInfo]:
        """Every registered node (in registration order) with `role`; by default only
        those active and staked at least their roles' minimum, with a well-formed
        endpoint (what clients may use)."""
        count = int(self._view("node_count"))
        infos = [self.node(str(self._view("node_at", i))) for i in range(count)]
        if role is not None:
            infos = [n for n in infos if n.has(Role(int(role)))]
        if not active_only:
            return infos
        minimum = {r: self.min_stake(r) for r in Role}
        return [
            n
            for n in infos
            if n.state == NodeState.ACTIVE
            and n.stake >= sum(m for r, m in minimum.items() if r in n.roles)
            and _well_formed(n.endpoint)
        ]

    def endpoints(self, role: Role | int) -> list[str]:
        """The endpoints of the active nodes with `role`: what clients connect to."""
        return [n.endpoint.rstrip("/") for n in self.nodes(role)]
