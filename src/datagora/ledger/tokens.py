"""Typed wrappers of the ERC-20 contracts: the MarketToken and the datatokens."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ContractWrapper, Tx, check_address
from datagora.ledger.errors import InvalidArgument, NoDatatoken, OrderExpired

MAX_CONSUMER_KEY = 128


@dataclass(frozen=True)
class Permit:
    """An EIP-2612 permit signature: `owner` lets `spender` move `amount` until `deadline`."""

    owner: str
    spender: str
    amount: int
    deadline: int
    v: int
    r: bytes
    s: bytes


class ERC20(ContractWrapper):
    """The ERC-20 + EIP-2612 surface shared by the MarketToken and datatokens."""

    def name(self) -> str:
        return str(self._view("name"))

    def symbol(self) -> str:
        return str(self._view("symbol"))

    def decimals(self) -> int:
        return int(self._view("decimals"))

    def total_supply(self) -> int:
        return int(self._view("totalSupply"))

    def balance_of(self, owner: str) -> int:
        return int(self._view("balanceOf", check_address(owner, "owner")))

    def allowance(self, owner: str, spender: str) -> int:
        return int(self._view("allowance", owner, spender))

    def nonce_of(self, owner: str) -> int:
        return int(self._view("nonces", owner))

    def transfer(self, account: LocalAccount, to: str, amount: int) -> Tx:
        return Tx.of(self._transact(account, "transfer", check_address(to, "recipient"), amount))

    def approve(self, account: LocalAccount, spender: str, amount: int) -> Tx:
        return Tx.of(self._transact(account, "approve", check_address(spender, "spender"), amount))

    def supports_permit(self) -> bool:
        """Whether the token has EIP-2612 permit (``DOMAIN_SEPARATOR`` and ``nonces``
        answer); a plain ERC-20 is paid through an allowance instead."""
        cached = getattr(self, "_permit", None)
        if cached is None:
            from datagora.errors import DatagoraError

            try:
                self._view("DOMAIN_SEPARATOR")
                self._view("nonces", self.address)
                cached = True
            except DatagoraError:
                cached = False
            self._permit = cached
        return cached

    def sign_permit(
        self, account: LocalAccount, spender: str, amount: int, deadline: int
    ) -> Permit:
        """Sign, off chain, a permit letting `spender` move `amount` of `account`'s tokens."""
        _, name, version, chain_id, verifying, _, _ = self._view("eip712Domain")
        typed = encode_typed_data(
            full_message={
                "types": {
                    "EIP712Domain": [
                        {"name": "name", "type": "string"},
                        {"name": "version", "type": "string"},
                        {"name": "chainId", "type": "uint256"},
                        {"name": "verifyingContract", "type": "address"},
                    ],
                    "Permit": [
                        {"name": "owner", "type": "address"},
                        {"name": "spender", "type": "address"},
                        {"name": "value", "type": "uint256"},
                        {"name": "nonce", "type": "uint256"},
                        {"name": "deadline", "type": "uint256"},
                    ],
                },
                "primaryType": "Permit",
                "domain": {
                    "name": name,
                    "version": version,
                    "chainId": chain_id,
                    "verifyingContract": verifying,
                },
                "message": {
                    "owner": account.address,
                    "spender": spender,
                    "value": amount,
                    "nonce": self.nonce_of(account.address),
                    "deadline": deadline,
                },
            }
        )
        signed = Account.sign_message(typed, account.key)
        return Permit(
            owner=account.address,
            spender=spender,
            amount=amount,
            deadline=deadline,
            v=signed.v,
            r=signed.r.to_bytes(32, "big"),
            s=signed.s.to_bytes(32, "big"),
        )

    def permit(self, account: LocalAccount, permit: Permit) -> Tx:
        """Submit a permit (anyone may; `account` pays the gas)."""
        return Tx.of(
            self._transact(
                account,
                "permit",
                permit.owner,
                permit.spender,
                permit.amount,
                permit.deadline,
                permit.v,
                permit.r,
                permit.s,
            )
        )


class MarketToken(ERC20):
    """The marketplace currency."""

    contract_name = "MarketToken"

    def mint(self, account: LocalAccount, to: str, amount: int) -> Tx:
        """Mint (minter role only; the faucet of development chains)."""
        return Tx.of(self._transact(account, "mint", check_address(to, "recipient"), amount))


@dataclass(frozen=True)
class Order:
    """An order mined on chain."""

    dataset: int
    consumer: str
    payer: str
    service_id: int
    consumer_key: bytes
    expires_at: int
    tx: Tx


def check_consumer_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) > MAX_CONSUMER_KEY:
        raise InvalidArgument(
            "bad consumer key", f"consumer key must be at most {MAX_CONSUMER_KEY} bytes"
        )
    return bytes(key)


class Datatoken(ERC20):
    """One dataset's datatoken (an EIP-1167 clone of the template)."""

    contract_name = "Datatoken"

    def dataset(self) -> int:
        return int(self._view("dataset"))

    def service_timeout(self, service_id: int) -> int:
        return int(self._view("service_timeout", service_id))

    def service_units(self, service_id: int) -> int:
        """Datatokens one order of `service_id` spends (its price in datatokens)."""
        return int(self._view("service_units", service_id))

    def terms_floor(self, service_id: int) -> int:
        """The expiry an order of `service_id` gets under the terms seen now: the
        ``min_expires_at`` guard a buyer passes. A later block only adds time, so the
        guard fails only if the seller shortens the validity before the order is mined.
        """
        return self.chain.timestamp() + self.service_timeout(service_id)

    def order_expires_at(self, consumer: str, service_id: int) -> int:
        return int(self._view("order_expires_at", consumer, service_id))

    def has_valid_order(self, consumer: str, service_id: int) -> bool:
        """An unexpired order, and the dataset serves now (active, consumer not deny-listed)."""
        return bool(self._view("has_valid_order", consumer, service_id))

    def require_valid_order(self, consumer: str, service_id: int) -> int:
        """The expiry of `consumer`'s order, or a clear error if there is none valid now."""
        expires_at = self.order_expires_at(consumer, service_id)
        if expires_at == 0:
            raise NoDatatoken(
                "no order", f"{consumer} has no order for service {service_id}: buy and order first"
            )
        if expires_at <= self.chain.timestamp():
            raise OrderExpired(
                "order expired",
                f"{consumer}'s order for service {service_id} expired at {expires_at}: order again",
            )
        return expires_at

    def mint(self, account: LocalAccount, to: str, amount: int) -> Tx:
        """Mint datatokens (the dataset's controller only)."""
        return Tx.of(self._transact(account, "mint", check_address(to, "recipient"), amount))

    def set_service(self, account: LocalAccount, service_id: int, timeout: int) -> Tx:
        """Offer `service_id` with orders valid `timeout` seconds (0 withdraws it).
        Orders already paid keep their expiry."""
        return Tx.of(self._transact(account, "set_service", service_id, timeout))

    def set_service_units(self, account: LocalAccount, service_id: int, units: int) -> Tx:
        """Price `service_id` at `units` datatokens per order: with the exchange's price
        per datatoken, the price per (dataset, service)."""
        return Tx.of(self._transact(account, "set_service_units", service_id, units))

    def order(
        self,
        account: LocalAccount,
        service_id: int,
        consumer_key: bytes = b"",
        consumer: str | None = None,
        min_expires_at: int | None = None,
        max_units: int | None = None,
    ) -> Order:
        """Spend the service's datatokens on an order, for `account` or for `consumer`
        (account pays).

        The guards default to the terms seen now: `min_expires_at` to
        :meth:`terms_floor` and `max_units` to :meth:`service_units`. If the seller
        shortens the validity or raises the service's price before the order is
        mined, it reverts (:class:`TermsChanged`, :class:`PriceAboveMaximum`) and the
        datatokens are kept.
        """
        key = check_consumer_key(consumer_key)
        floor = self.terms_floor(service_id) if min_expires_at is None else min_expires_at
        units = self.service_units(service_id) if max_units is None else max_units
        if consumer is None:
            receipt = self._transact(account, "order", service_id, key, floor, units)
        else:
            who = check_address(consumer, "consumer")
            receipt = self._transact(account, "order_for", who, service_id, key, floor, units)
        return self.order_from_receipt(receipt)

    def order_from_receipt(self, receipt: object) -> Order:
        (ev,) = self._decode(receipt, "OrderStarted")  # type: ignore[arg-type]
        return Order(
            dataset=int(ev["dataset"]),
            consumer=str(ev["consumer"]),
            payer=str(ev["payer"]),
            service_id=int(ev["service_id"]),
            consumer_key=bytes(ev["consumer_key"]),
            expires_at=int(ev["expires_at"]),
            tx=Tx.of(receipt),  # type: ignore[arg-type]
        )
