"""Market tokens for accounts: the faucet of development chains (``datagora fund``) and
plain transfers between accounts (``datagora transfer``).

A development network (``datagora up``, anvil, the embedded chain) is deployed by
development account 0, which may mint the market currency; on any other chain nothing
is minted, and tokens come from someone who holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from datagora.display import format_amount
from datagora.errors import ConfigError
from datagora.ledger import Ledger, Tx, dev_account
from datagora.ledger.errors import InsufficientFunds
from datagora.node.errors import NotADevelopmentChain

DEV_CHAIN_IDS: Final = frozenset({31337, 1337, 131277322940537})
"""Chain ids of development chains: anvil and hardhat use 31337, ganache and geth --dev
1337, the embedded chain (eth-tester) 131277322940537."""
GAS_ETHER: Final = 10**18
"""Ether (wei) the faucet gives an account that has less than a tenth of it, for gas."""


@dataclass(frozen=True)
class Funded:
    """What :func:`fund` or :func:`transfer` did."""

    to: str
    amount: int
    balance: int
    tx: Tx
    gas_wei: int = 0


def _positive(amount: int) -> int:
    if amount <= 0:
        raise ConfigError(f"the amount must be more than 0 (got {format_amount(amount)})")
    return amount


def fund(ledger: Ledger, to: str, amount: int) -> Funded:
    """Mint `amount` market-token base units to `to` from the development faucet (and
    give it ether for gas if it has almost none). Refused, changing nothing, unless the
    chain is a development chain (:data:`DEV_CHAIN_IDS`)."""
    _positive(amount)
    chain = ledger.chain
    found = chain.chain_id
    if found not in DEV_CHAIN_IDS:
        raise NotADevelopmentChain(
            f"chain {found} is not a development chain (31337 or 1337): nothing is minted "
            "there; ask an account that holds tokens to `datagora transfer` them"
        )
    faucet = dev_account(0)
    gas = 0
    if chain.balance(to) < GAS_ETHER // 10:
        chain.fund(to, GAS_ETHER)
        gas = GAS_ETHER
    tx = ledger.market_token.mint(faucet, to, amount)
    return Funded(to, amount, ledger.market_token.balance_of(to), tx, gas)


def transfer(ledger: Ledger, account: Any, to: str, amount: int) -> Funded:
    """Send `amount` market-token base units from `account` to `to`; refused, changing
    nothing, when the account holds less."""
    _positive(amount)
    have = ledger.market_token.balance_of(account.address)
    if have < amount:
        raise InsufficientFunds(
            "balance too low",
            f"{account.address} holds {format_amount(have)}, not {format_amount(amount)}"
            + ("; on a development network, `datagora fund` gives tokens" if have == 0 else ""),
        )
    tx = ledger.market_token.transfer(account, to, amount)
    return Funded(to, amount, ledger.market_token.balance_of(to), tx)
