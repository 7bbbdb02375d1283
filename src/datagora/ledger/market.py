"""Typed wrappers of the FixedRateExchange and the Dispenser."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ContractWrapper, Tx, check_address
from datagora.ledger.chain import Chain
from datagora.ledger.tokens import Datatoken, MarketToken, Order, Permit, check_consumer_key

BPS = 10_000


@dataclass(frozen=True)
class Quote:
    """What a purchase costs and who gets what (MarketToken base units)."""

    total: int
    publisher_amount: int
    market_fee: int
    protocol_fee: int


class FixedRateExchange(ContractWrapper):
    """Sells datatokens for MarketToken at a fixed price."""

    contract_name = "FixedRateExchange"

    def __init__(self, chain: Chain, address: str, market_token: MarketToken) -> None:
        super().__init__(chain, address)
        self.market_token = market_token

    def price(self, dataset: int) -> int:
        return int(self._view("price", dataset))

    def is_active(self, dataset: int) -> bool:
        return bool(self._view("is_active", dataset))

    def quote(self, dataset: int, amount: int = 1) -> Quote:
        """What `amount` datatokens cost now (an order of a service costs its
        ``Datatoken.service_units`` datatokens)."""
        q = self._view("quote", dataset, amount)
        return Quote(int(q[0]), int(q[1]), int(q[2]), int(q[3]))

    def market_fee(self, dataset: int) -> tuple[int, str]:
        bps, recipient = self._view("market_fee", dataset)
        return int(bps), str(recipient)

    def protocol_fee(self) -> tuple[int, str]:
        bps, recipient = self._view("protocol_fee")
        return int(bps), str(recipient)

    def max_market_fee_bps(self) -> int:
        return int(self._view("MAX_MARKET_FEE_BPS"))

    def max_protocol_fee_bps(self) -> int:
        return int(self._view("MAX_PROTOCOL_FEE_BPS"))

    def create(
        self,
        account: LocalAccount,
        dataset: int,
        price: int,
        market_fee_bps: int,
        market_fee_recipient: str,
    ) -> Tx:
        """Put a dataset on sale later than its publish (its controller only)."""
        return Tx.of(
            self._transact(account, "create", dataset, price, market_fee_bps, market_fee_recipient)
        )

    def set_price(self, account: LocalAccount, dataset: int, price: int) -> Tx:
        return Tx.of(self._transact(account, "set_price", dataset, price))

    def set_active(self, account: LocalAccount, dataset: int, active: bool) -> Tx:
        return Tx.of(self._transact(account, "set_active", dataset, active))

    def set_market_fee(
        self, account: LocalAccount, dataset: int, fee_bps: int, recipient: str
    ) -> Tx:
        """Hand `dataset`'s market fee to `recipient` or lower it (its current recipient
        only; never above the rate the seller agreed to)."""
        return Tx.of(
            self._transact(
                account, "set_market_fee", dataset, fee_bps, check_address(recipient, "recipient")
            )
        )

    def propose_protocol_fee(self, account: LocalAccount, fee_bps: int, recipient: str) -> int:
        """Propose a protocol fee (the exchange owner; at most ``max_protocol_fee_bps``);
        it may be applied after ``protocol_fee_delay`` seconds. Returns when."""
        receipt = self._transact(account, "propose_protocol_fee", fee_bps, recipient)
        (ev,) = self._decode(receipt, "ProtocolFeeProposed")
        return int(ev["effective_at"])

    def apply_protocol_fee(self, account: LocalAccount) -> Tx:
        """Apply the proposed protocol fee once its delay is over (anyone may)."""
        return Tx.of(self._transact(account, "apply_protocol_fee"))

    def pending_protocol_fee(self) -> tuple[int, str, int]:
        """(bps, recipient, effective_at) of the proposed protocol fee; all 0: none."""
        bps, recipient, at = self._view("pending_protocol_fee")
        return int(bps), str(recipient), int(at)

    def protocol_fee_delay(self) -> int:
        return int(self._view("PROTOCOL_FEE_DELAY"))

    def max_consume_fee_bps(self) -> int:
        return int(self._view("MAX_CONSUME_FEE_BPS"))

    def buy(self, account: LocalAccount, dataset: int, amount: int, max_total: int) -> Tx:
        """Buy datatokens (needs a MarketToken allowance for the exchange)."""
        return Tx.of(self._transact(account, "buy", dataset, amount, max_total))

    def buy_and_order(
        self,
        account: LocalAccount,
        dataset: int,
        datatoken: Datatoken,
        service_id: int = 0,
        consumer_key: bytes = b"",
        max_price: int | None = None,
        permit_deadline: int | None = None,
        min_expires_at: int | None = None,
        consume_fee_recipient: str | None = None,
        consume_fee_bps: int = 0,
    ) -> Order:
        """Buy one access and order it in one transaction, paying through a permit.

        `max_price` defaults to the service's current price (any rise makes the transaction
        revert with :class:`PriceAboveMaximum`); `min_expires_at` defaults to the
        expiry the service's current terms give (:meth:`Datatoken.terms_floor`: a
        shortened validity makes it revert with :class:`TermsChanged`). Either way
        nothing is paid. The permit is signed here, off chain; no approve
        transaction is needed. A market currency without EIP-2612 permit is paid
        through an allowance: if the buyer's allowance to the exchange is below
        `max_price`, an ``approve`` of `max_price` is sent first.

        With `consume_fee_recipient` and `consume_fee_bps` (at most
        ``max_consume_fee_bps``), the marketplace the buyer used earns a consume fee
        paid on top of the price (``buy_and_order_via``); `max_price` then bounds the
        price and the fee together.
        """
        key = check_consumer_key(consumer_key)
        via = consume_fee_recipient is not None
        if via:
            check_address(str(consume_fee_recipient), "consume fee recipient")
        if max_price is None:
            max_price = self.quote(dataset, datatoken.service_units(service_id)).total
            max_price += max_price * consume_fee_bps // 10_000
        if min_expires_at is None:
            min_expires_at = datatoken.terms_floor(service_id)
        if self.market_token.supports_permit():
            deadline = permit_deadline or self.chain.timestamp() + 3_600
            permit = self.market_token.sign_permit(account, self.address, max_price, deadline)
        else:
            if self.market_token.allowance(account.address, self.address) < max_price:
                self.market_token.approve(account, self.address, max_price)
            permit = Permit(account.address, self.address, max_price, 0, 0, bytes(32), bytes(32))
        args: tuple[object, ...] = (
            dataset,
            service_id,
            key,
            max_price,
            min_expires_at,
            permit.deadline,
            permit.v,
            permit.r,
            permit.s,
        )
        if via:
            args = (*args, consume_fee_recipient, consume_fee_bps)
        receipt = self._transact(account, "buy_and_order_via" if via else "buy_and_order", *args)
        return datatoken.order_from_receipt(receipt)


class Dispenser(ContractWrapper):
    """Free datatokens with a per-address limit."""

    contract_name = "Dispenser"

    def max_per_address(self, dataset: int) -> int:
        return int(self._view("max_per_address", dataset))

    def is_active(self, dataset: int) -> bool:
        return bool(self._view("active", dataset))

    def dispensed(self, dataset: int, account: str) -> int:
        return int(self._view("dispensed", dataset, account))

    def create(self, account: LocalAccount, dataset: int, max_per_address: int) -> Tx:
        return Tx.of(self._transact(account, "create", dataset, max_per_address))

    def configure(
        self, account: LocalAccount, dataset: int, max_per_address: int, active: bool
    ) -> Tx:
        return Tx.of(self._transact(account, "configure", dataset, max_per_address, active))

    def set_cap(self, account: LocalAccount, dataset: int, cap: int) -> Tx:
        """Cap what everyone together may take (0: no cap; the controller only)."""
        return Tx.of(self._transact(account, "set_cap", dataset, cap))

    def cap(self, dataset: int) -> tuple[int, int]:
        """The overall cap (0: none) and the datatokens taken in all since it existed."""
        cap, taken = self._view("cap", dataset)
        return int(cap), int(taken)

    def dispense(self, account: LocalAccount, dataset: int, amount: int = 1) -> Tx:
        return Tx.of(self._transact(account, "dispense", dataset, amount))

    def dispense_and_order(
        self,
        account: LocalAccount,
        dataset: int,
        datatoken: Datatoken,
        service_id: int = 0,
        consumer_key: bytes = b"",
        min_expires_at: int | None = None,
    ) -> Order:
        """Take one free datatoken and order with it, in one transaction (the terms guard
        `min_expires_at` defaults to :meth:`Datatoken.terms_floor`)."""
        key = check_consumer_key(consumer_key)
        if min_expires_at is None:
            min_expires_at = datatoken.terms_floor(service_id)
        receipt = self._transact(
            account, "dispense_and_order", dataset, service_id, key, min_expires_at
        )
        return datatoken.order_from_receipt(receipt)
