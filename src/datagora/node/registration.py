"""Registering a network's own nodes in the NodeRegistry (`datagora up`, the embedded
network): each node with its own development account, funded and staked.

:func:`ensure_registered` is idempotent: a node already registered keeps its record,
with its endpoint and Umbral key brought up to date (a new port after a restart) and
its stake topped up to the minimum; a node that is leaving is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from eth_account.signers.local import LocalAccount

from datagora.ledger import Ledger, NodeInfo, NodeState, Role, dev_account
from datagora.ledger.errors import NotFound

__all__ = ["STORAGE_ACCOUNT_BASE", "DevNode", "ensure_registered", "register_dev_nodes"]

STORAGE_ACCOUNT_BASE: Final = 20
"""Development account index of a development network's first storage node (20, 21, …:
past anvil's ten funded accounts, so they are funded when registered)."""
GAS_WEI: Final = 10**18


@dataclass(frozen=True)
class DevNode:
    """One node of a development network to register."""

    account: LocalAccount
    roles: Role
    endpoint: str
    umbral_pk: bytes = b""


def ensure_registered(
    ledger: Ledger,
    account: LocalAccount,
    roles: Role,
    endpoint: str,
    umbral_pk: bytes = b"",
    stake: int | None = None,
) -> NodeInfo | None:
    """Register `account` (approving its stake: `stake`, default the roles' minimum) or
    bring its record up to date; a node that left and unbonded withdraws and registers
    again; None if it is still unbonding (it cannot serve again before that)."""
    registry = ledger.registry
    need = registry.required_stake(roles) if stake is None else stake
    try:
        info: NodeInfo | None = registry.node(account.address)
    except NotFound:
        info = None
    if info is not None and info.state == NodeState.LEAVING:
        if ledger.chain.timestamp() < info.unbond_at:
            return None
        registry.withdraw(account)  # unbonded: take the stake back, register afresh
        info = None
    if info is None or info.state != NodeState.ACTIVE:
        registry.register(account, roles, endpoint, need, umbral_pk)
        return registry.node(account.address)
    if (info.endpoint, info.umbral_pk) != (endpoint.rstrip("/"), umbral_pk):
        registry.update(account, endpoint, umbral_pk)
    if info.stake < need:
        registry.add_stake(account, need - info.stake)
    return registry.node(account.address)


def register_dev_nodes(ledger: Ledger, nodes: list[DevNode]) -> list[NodeInfo]:
    """Fund (ether for gas, market tokens minted by development account 0, the
    deployer) and register each node; development chains only."""
    deployer = dev_account(0)
    token = ledger.market_token
    registry = ledger.registry
    done: list[NodeInfo] = []
    for node in nodes:
        address = node.account.address
        if ledger.chain.balance(address) < GAS_WEI // 10:
            ledger.chain.fund(address, GAS_WEI)
        need = registry.required_stake(node.roles)
        short = need - registry.stake_of(address) - token.balance_of(address)
        if short > 0:
            token.mint(deployer, address, short)
        info = ensure_registered(ledger, node.account, node.roles, node.endpoint, node.umbral_pk)
        if info is not None:
            done.append(info)
    return done
