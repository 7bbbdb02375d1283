"""Property tests (hypothesis) of the ledger's invariants, on the embedded chain.

Each example runs inside its own chain snapshot, so examples are independent.
Transactions are sent with a fixed gas limit rather than through the wrappers'
gas estimation: a refused call is then really mined and reverted, and "changes
nothing" is checked against a reverted transaction, not one that was never sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.types import TxReceipt

from datagora.ledger import (
    DatasetState,
    Datatoken,
    Ledger,
    ListKind,
    MarketToken,
    Pricing,
    PublishParams,
    RequestStatus,
    dev_account,
)
from datagora.ledger.compiler import compile_contract
from datagora.ledger.errors import (
    ContractRuleError,
    InsufficientFunds,
    InvalidArgument,
    InvalidState,
    LimitExceeded,
    NoDatatoken,
    NotController,
    NotFound,
    TermsChanged,
)
from helpers import BUYER, DEPLOYER, MARKET, OTHER, OWNER, PRICE, h, publish

ACTORS = (OWNER, BUYER, MARKET, OTHER, dev_account(5))
NOT_OWNERS = ACTORS[1:]
PROTOCOL = dev_account(6)
ZERO = "0x" + "00" * 20
BPS = 10_000
GAS = 1_000_000
PUBLISH_GAS = 3_000_000
FAR = 10**8  # seconds: grants in these tests never expire
TRANSFER = keccak(text="Transfer(address,address,uint256)")
DATASET_CREATED = keccak(
    text="DatasetCreated(uint256,address,address,bytes32,bytes32,bytes32,string)"
)
ACCESS_REQUESTED = keccak(text="AccessRequested(uint256,uint256,address,string,bytes)")
ORDER_STARTED = keccak(text="OrderStarted(uint256,address,address,uint256,bytes,uint256)")
BALANCE = (InsufficientFunds, "exceeds balance")
Refusal = tuple[type[ContractRuleError], str] | None


@functools.cache
def abi(contract: str) -> list[dict[str, Any]]:
    return compile_contract(contract).abi


def examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@contextlib.contextmanager
def isolated(ledger: Ledger) -> Iterator[None]:
    """Run one example on a snapshot of the chain, and forget it afterwards."""
    snapshot = ledger.chain.snapshot()
    try:
        yield
    finally:
        ledger.chain.revert(snapshot)


def send(ledger: Ledger, account: Any, tx: dict[str, Any], what: str, gas: int = GAS) -> TxReceipt:
    """Mine `tx` whatever it does; a revert is raised as the rule it broke."""
    return ledger.chain.send(account, tx, what, gas=gas).receipt()


def first_topic(receipt: TxReceipt, contract: str, event: bytes) -> int:
    """The first indexed argument of the one `event` that `contract` emitted in `receipt`."""
    (log,) = [
        log
        for log in receipt["logs"]
        if log["address"] == contract and bytes(log["topics"][0]) == event
    ]
    return int.from_bytes(bytes(log["topics"][1]), "big")


def launch(ledger: Ledger, pricing: Pricing = Pricing.FIXED, **overrides: Any) -> int:
    """Publish as `helpers.publish` does, but with fixed gas.

    py-evm estimates gas by bisection, which would cost every example several
    extra executions of its set-up.
    """
    fields: dict[str, Any] = {
        "metadata_hash": h("metadata"),
        "metadata_uri": "https://example.org/meta.json",
        "manifest_hash": h("manifest"),
        "merkle_root": h("root"),
        "pricing": pricing,
        "price": PRICE if pricing == Pricing.FIXED else 0,
        "market_fee_bps": 100 if pricing == Pricing.FIXED else 0,
        "market_fee_recipient": MARKET.address,
        "dispenser_max_per_address": 2 if pricing == Pricing.FREE else 0,
        **overrides,
    }
    tx = ledger.factory.prepare("publish", PublishParams(**fields).checked())
    receipt = send(ledger, OWNER, tx, "publish", gas=PUBLISH_GAS)
    return first_topic(receipt, ledger.data_nft.address, DATASET_CREATED)


def request(ledger: Ledger, consumer: Any, dataset: int) -> int:
    tx = ledger.access.prepare("request", dataset, "purpose", b"")
    receipt = send(ledger, consumer, tx, "request")
    return first_topic(receipt, ledger.access.address, ACCESS_REQUESTED)


def grant(ledger: Ledger, request_id: int) -> None:
    tx = ledger.access.prepare("grant", request_id, ledger.chain.timestamp() + FAR)
    send(ledger, OWNER, tx, "grant")


def expect(
    ledger: Ledger, account: Any, tx: dict[str, Any], what: str, refusal: Refusal
) -> TxReceipt | None:
    """Send `tx`; it must succeed when `refusal` is None, else be refused with that rule."""
    if refusal is None:
        return send(ledger, account, tx, what)
    cls, reason = refusal
    with pytest.raises(cls, match=reason):
        send(ledger, account, tx, what)
    return None


def transfers(receipt: TxReceipt, token: str) -> list[tuple[str, str, int]]:
    """The ERC-20 Transfer events `token` emitted in `receipt`: (from, to, value)."""
    return [
        (
            to_checksum_address(bytes(log["topics"][1])[12:]),
            to_checksum_address(bytes(log["topics"][2])[12:]),
            int.from_bytes(bytes(log["data"]), "big"),
        )
        for log in receipt["logs"]
        if log["address"] == token and bytes(log["topics"][0]) == TRANSFER
    ]


# -- (a), (b): balances, supplies and orders against an exact model -----------------------

Move = tuple[str | None, str | None, int]  # (from, to, amount); None is mint or burn


class Market:
    """A fixed-price and a free dataset, with an exact model of every token balance.

    Each operation predicts from the model whether it succeeds or which rule it
    breaks, runs as a real transaction, then checks the chain against the model.
    """

    def __init__(self, ledger: Ledger, price: int, market_fee_bps: int, limit: int) -> None:
        self.ledger = ledger
        self.price = price
        self.market_fee_bps = market_fee_bps
        self.limit = limit
        self.dataset = {
            "fixed": launch(ledger, Pricing.FIXED, price=price, market_fee_bps=market_fee_bps),
            "free": launch(ledger, Pricing.FREE, dispenser_max_per_address=limit),
        }
        self.datatoken = {name: ledger.datatoken(ds) for name, ds in self.dataset.items()}
        self.tokens: dict[str, MarketToken | Datatoken] = {
            "MT": ledger.market_token,
            **self.datatoken,
        }
        self.protocol_fee_bps, self.protocol_recipient = ledger.exchange.protocol_fee()
        timeout = self.datatoken["fixed"].service_timeout(0)
        assert timeout == self.datatoken["free"].service_timeout(0) > 0
        # which -> service -> order validity; publish opens service 0 only.
        self.timeouts: dict[str, dict[int, int]] = {"fixed": {0: timeout}, "free": {0: timeout}}
        self.state = {"fixed": DatasetState.ACTIVE, "free": DatasetState.ACTIVE}
        self.denied: dict[str, set[str]] = {"fixed": set(), "free": set()}
        self.holders = {a.address for a in ACTORS} | {self.protocol_recipient}
        self.balance: dict[str, Counter[str]] = {
            "MT": Counter({a: ledger.market_token.balance_of(a) for a in self.holders}),
            "fixed": Counter(),
            "free": Counter(),
        }
        self.supply = {name: token.total_supply() for name, token in self.tokens.items()}
        assert self.supply["fixed"] == self.supply["free"] == 0
        self.dispensed: Counter[str] = Counter()
        self.expiry: Counter[tuple[str, str, int]] = Counter()
        self._order_started = ledger.chain.w3.eth.contract(
            abi=abi("Datatoken")
        ).events.OrderStarted()

    # -- the model ---------------------------------------------------------------------
    def _feasible(self, token: str, moves: list[Move]) -> bool:
        balance = Counter(self.balance[token])
        for src, dst, amount in moves:
            if src is not None:
                if balance[src] < amount:
                    return False
                balance[src] -= amount
            if dst is not None:
                balance[dst] += amount
        return True

    def _apply(self, token: str, moves: list[Move]) -> None:
        for src, dst, amount in moves:
            if src is None:
                self.supply[token] += amount
            else:
                self.balance[token][src] -= amount
            if dst is None:
                self.supply[token] -= amount
            else:
                self.balance[token][dst] += amount

    def _check(self, token: str, accounts: set[str]) -> None:
        chain_token = self.tokens[token]
        assert chain_token.total_supply() == self.supply[token]
        for account in accounts:
            assert chain_token.balance_of(account) == self.balance[token][account], account

    def _track(self, receipt: TxReceipt | None) -> None:
        """Remember every address a Transfer touched: the invariant sums over all of them."""
        if receipt is None:
            return
        for token in self.tokens.values():
            for src, dst, _ in transfers(receipt, token.address):
                self.holders |= {src, dst} - {ZERO}

    def check_all(self) -> None:
        """(a): for every token, the balances of every account touched sum to totalSupply."""
        for name, token in self.tokens.items():
            balances = {a: token.balance_of(a) for a in self.holders}
            assert balances == {a: self.balance[name][a] for a in self.holders}, name
            assert sum(balances.values()) == token.total_supply() == self.supply[name], name

    def _payment(self, payer: str, total: int) -> list[Move]:
        market_fee = total * self.market_fee_bps // BPS
        protocol_fee = total * self.protocol_fee_bps // BPS
        moves: list[Move] = [(payer, OWNER.address, total - market_fee - protocol_fee)]
        if market_fee:
            moves.append((payer, MARKET.address, market_fee))
        if protocol_fee:
            moves.append((payer, self.protocol_recipient, protocol_fee))
        return moves

    def _gate(self, which: str, account: str) -> Refusal:
        """The refusal of a sale or order to `account` before any token moves, if any."""
        if self.state[which] != DatasetState.ACTIVE:
            return (InvalidState, "not active")
        if account in self.denied[which]:
            return (InvalidState, "deny-listed")
        return None

    def _terms(self, which: str, service: int, seen: int) -> Refusal:
        """The refusal of the order itself: a closed service, or terms shorter than seen."""
        timeout = self.timeouts[which].get(service, 0)
        if timeout == 0:
            return (NotFound, "unknown service")
        if seen > timeout:
            return (TermsChanged, "order terms changed")
        return None

    def _guard(self, which: str, service: int, stale: bool) -> tuple[int, int]:
        """The buyer's `min_expires_at` and the validity it saw. A stale buyer saw a
        longer validity than the service offers now (the seller shortened it since);
        blocks are seconds apart, far less than the extra day it expects."""
        seen = self.timeouts[which].get(service, 0) + (86_400 if stale else 0)
        return self.ledger.chain.timestamp() + seen, seen

    def _run(
        self, account: Any, tx: dict[str, Any], what: str, refusal: Refusal
    ) -> TxReceipt | None:
        receipt = expect(self.ledger, account, tx, what, refusal)
        self._track(receipt)
        return receipt

    # -- operations --------------------------------------------------------------------
    def mt_mint(self, to: int, units: int, extra: int) -> None:
        who = ACTORS[to].address
        amount = units * self.price + extra or 1
        mt = self.ledger.market_token
        self._run(DEPLOYER, mt.prepare("mint", who, amount), "mint", None)
        self._apply("MT", [(None, who, amount)])
        self._check("MT", {who})

    def transfer(self, token: str, src: int, dst: int, how: str) -> None:
        sender, receiver = ACTORS[src], ACTORS[dst].address
        held = self.balance[token][sender.address]
        amount = {"all": held, "half": held // 2, "more": held + 1}[how]
        refusal = None if amount <= held else BALANCE
        contract = self.tokens[token]
        receipt = self._run(
            sender, contract.prepare("transfer", receiver, amount), "transfer", refusal
        )
        if receipt is not None:
            assert transfers(receipt, contract.address) == [(sender.address, receiver, amount)]
            self._apply(token, [(sender.address, receiver, amount)])
        self._check(token, {sender.address, receiver})

    def dt_mint(self, which: str, to: int, amount: int) -> None:
        who = ACTORS[to].address
        self._run(OWNER, self.datatoken[which].prepare("mint", who, amount), "mint", None)
        self._apply(which, [(None, who, amount)])
        self._check(which, {who})

    def buy(self, who: int, amount: int) -> None:
        buyer = ACTORS[who]
        ex, mt = self.ledger.exchange, self.ledger.market_token
        total = self.price * amount
        send(self.ledger, buyer, mt.prepare("approve", ex.address, total), "approve")
        payment = self._payment(buyer.address, total)
        refusal = self._gate("fixed", buyer.address)
        if refusal is None and not self._feasible("MT", payment):
            refusal = BALANCE
        tx = ex.prepare("buy", self.dataset["fixed"], amount, total)
        if self._run(buyer, tx, "buy", refusal) is not None:
            self._apply("MT", payment)
            self._apply("fixed", [(None, buyer.address, amount)])
        self._check("MT", {buyer.address, OWNER.address, MARKET.address, self.protocol_recipient})
        self._check("fixed", {buyer.address})

    def order(self, which: str, who: int, service: int, key: bytes, stale: bool = False) -> None:
        holder = ACTORS[who]
        self._order(which, holder, holder.address, service, key, stale, via_order_for=False)

    def order_for(
        self, which: str, who: int, consumer: int, service: int, key: bytes, stale: bool = False
    ) -> None:
        holder, to = ACTORS[who], ACTORS[consumer].address
        self._order(which, holder, to, service, key, stale, via_order_for=True)

    def _order(
        self,
        which: str,
        holder: Any,
        consumer: str,
        service: int,
        key: bytes,
        stale: bool,
        via_order_for: bool,
    ) -> None:
        dt = self.datatoken[which]
        guard, seen = self._guard(which, service, stale)
        refusal = self._gate(which, consumer)
        if refusal is None and self.balance[which][holder.address] == 0:
            refusal = (NoDatatoken, "no datatoken")
        refusal = refusal or self._terms(which, service, seen)
        if via_order_for:
            tx = dt.prepare("order_for", consumer, service, key, guard, 1)
        else:
            tx = dt.prepare("order", service, key, guard, 1)
        receipt = self._run(holder, tx, "order", refusal)
        if receipt is None:
            assert dt.order_expires_at(consumer, service) == self.expiry[which, consumer, service]
        else:
            # (b): one OrderStarted, one datatoken burnt from the holder, nothing else.
            self._check_order(receipt, which, holder.address, consumer, service, key)
            assert transfers(receipt, dt.address) == [(holder.address, ZERO, 1)]
            self._apply(which, [(holder.address, None, 1)])
        self._check(which, {holder.address, consumer})

    def buy_and_order(self, who: int, service: int, key: bytes, stale: bool = False) -> None:
        buyer = ACTORS[who]
        ex, mt = self.ledger.exchange, self.ledger.market_token
        payment = self._payment(buyer.address, self.price)
        guard, seen = self._guard("fixed", service, stale)
        # The order comes first (to learn its price in datatokens), then the payment.
        refusal = self._gate("fixed", buyer.address) or self._terms("fixed", service, seen)
        if refusal is None and not self._feasible("MT", payment):
            refusal = BALANCE
        permit = mt.sign_permit(
            buyer, ex.address, self.price, self.ledger.chain.timestamp() + 3_600
        )
        tx = ex.prepare(
            "buy_and_order",
            self.dataset["fixed"],
            service,
            key,
            self.price,
            guard,
            permit.deadline,
            permit.v,
            permit.r,
            permit.s,
        )
        receipt = self._run(buyer, tx, "buy_and_order", refusal)
        if receipt is not None:
            self._check_market_order(receipt, "fixed", buyer.address, service, key)
            self._apply("MT", payment)
        self._check("MT", {buyer.address, OWNER.address, MARKET.address, self.protocol_recipient})
        self._check("fixed", {buyer.address})

    def dispense(self, who: int, amount: int) -> None:
        taker = ACTORS[who]
        ok = self.dispensed[taker.address] + amount <= self.limit
        refusal = self._gate("free", taker.address)
        if refusal is None and not ok:
            refusal = (LimitExceeded, "limit reached")
        tx = self.ledger.dispenser.prepare("dispense", self.dataset["free"], amount)
        receipt = self._run(taker, tx, "dispense", refusal)
        if receipt is not None:
            assert transfers(receipt, self.datatoken["free"].address) == [
                (ZERO, taker.address, amount)
            ]
            self.dispensed[taker.address] += amount
            self._apply("free", [(None, taker.address, amount)])
        self._check("free", {taker.address})

    def dispense_and_order(self, who: int, service: int, key: bytes, stale: bool = False) -> None:
        taker = ACTORS[who]
        guard, seen = self._guard("free", service, stale)
        # The order comes first (to learn its price in datatokens), then the limit.
        refusal = self._gate("free", taker.address) or self._terms("free", service, seen)
        if refusal is None and self.dispensed[taker.address] + 1 > self.limit:
            refusal = (LimitExceeded, "limit reached")
        tx = self.ledger.dispenser.prepare(
            "dispense_and_order", self.dataset["free"], service, key, guard
        )
        receipt = self._run(taker, tx, "dispense_and_order", refusal)
        if receipt is not None:
            self._check_market_order(receipt, "free", taker.address, service, key)
            self.dispensed[taker.address] += 1
        dispensed = self.ledger.dispenser.dispensed(self.dataset["free"], taker.address)
        assert dispensed == self.dispensed[taker.address]
        self._check("free", {taker.address})

    # -- (b): what an order leaves in its receipt --------------------------------------
    def _check_market_order(
        self, receipt: TxReceipt, which: str, buyer: str, service: int, key: bytes
    ) -> None:
        self._check_order(receipt, which, buyer, buyer, service, key)
        # One datatoken minted to the buyer and spent at once: supply is unchanged.
        dt = self.datatoken[which].address
        assert transfers(receipt, dt) == [(ZERO, buyer, 1), (buyer, ZERO, 1)]

    def _check_order(
        self, receipt: TxReceipt, which: str, payer: str, consumer: str, service: int, key: bytes
    ) -> None:
        dt = self.datatoken[which]
        started = [
            log
            for log in receipt["logs"]
            if log["topics"] and bytes(log["topics"][0]) == ORDER_STARTED
        ]
        assert len(started) == 1
        assert started[0]["address"] == dt.address
        event = self._order_started.process_log(started[0])["args"]
        mined_at = int(self.ledger.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
        expires_at = mined_at + self.timeouts[which][service]
        assert (
            event["dataset"],
            event["consumer"],
            event["payer"],
            event["service_id"],
            bytes(event["consumer_key"]),
            event["expires_at"],
        ) == (self.dataset[which], consumer, payer, service, key, expires_at)
        # An order keeps the longest expiry its consumer has paid for.
        expected = max(expires_at, self.expiry[which, consumer, service])
        assert dt.order_expires_at(consumer, service) == expected
        self.expiry[which, consumer, service] = expected
        # No payment without a deliverable order: what was just paid for serves now.
        assert dt.has_valid_order(consumer, service)

    # -- the seller's moves ------------------------------------------------------------
    def set_timeout(self, which: str, service: int, seconds: int) -> None:
        """The seller changes (or closes, with 0) a service's terms."""
        dt = self.datatoken[which]
        self._run(OWNER, dt.prepare("set_service", service, seconds), "set_service", None)
        self.timeouts[which][service] = seconds

    def set_state(self, which: str, state: DatasetState) -> None:
        old = self.state[which]
        if old == DatasetState.RETIRED:
            refusal: Refusal = (InvalidState, "retired")
        elif state == DatasetState.AWAITING_REKEY:  # only a transfer puts it there
            refusal = (InvalidArgument, "unknown state")
        elif old == state:
            refusal = (InvalidState, "unchanged")
        else:
            refusal = None
        tx = self.ledger.data_nft.prepare("set_state", self.dataset[which], int(state))
        if self._run(OWNER, tx, "set_state", refusal) is not None:
            self.state[which] = state

    def set_list(self, which: str, who: int, deny: bool) -> None:
        account = ACTORS[who].address
        kind = ListKind.DENY if deny else ListKind.NONE
        tx = self.ledger.access.prepare("set_list", self.dataset[which], account, int(kind))
        self._run(OWNER, tx, "set_list", None)
        if deny:
            self.denied[which].add(account)
        else:
            self.denied[which].discard(account)

    def check_orders(self) -> None:
        """Terms never change after payment: every order keeps the expiry it was paid
        with, whatever the seller did since; it serves only while the dataset is active
        and its consumer is not deny-listed."""
        now = self.ledger.chain.timestamp()
        for (which, consumer, service), expiry in self.expiry.items():
            dt = self.datatoken[which]
            assert dt.order_expires_at(consumer, service) == expiry
            serves = self._gate(which, consumer) is None and expiry > now
            assert dt.has_valid_order(consumer, service) == serves


actor = st.integers(0, len(ACTORS) - 1)
which = st.sampled_from(["fixed", "free"])
service = st.sampled_from([0, 0, 0, 1])  # service 1 is not offered unless opened
key = st.binary(max_size=128)
stale = st.sampled_from([False, False, True])  # the buyer saw longer terms than now
OPERATIONS = {
    "mt_mint": st.tuples(actor, st.integers(0, 3), st.integers(0, 10**6)),
    "transfer": st.tuples(
        st.sampled_from(["MT", "fixed", "free"]),
        actor,
        actor,
        st.sampled_from(["all", "half", "more"]),
    ),
    "dt_mint": st.tuples(which, actor, st.integers(1, 3)),
    "buy": st.tuples(actor, st.integers(1, 3)),
    "buy_and_order": st.tuples(actor, service, key, stale),
    "dispense": st.tuples(actor, st.integers(1, 3)),
    "dispense_and_order": st.tuples(actor, service, key, stale),
    "order": st.tuples(which, actor, service, key, stale),
    "order_for": st.tuples(which, actor, actor, service, key, stale),
}
SELLER = {
    "set_timeout": st.tuples(which, st.sampled_from([0, 1]), st.sampled_from([0, 1, 3_600])),
    "set_state": st.tuples(which, st.sampled_from(DatasetState)),
    "set_list": st.tuples(which, actor, st.booleans()),
}


def operations(*names: str) -> st.SearchStrategy[list[tuple[str, tuple[Any, ...]]]]:
    one = st.one_of([st.tuples(st.just(name), {**OPERATIONS, **SELLER}[name]) for name in names])
    return st.lists(one, min_size=1, max_size=8)


@examples(12)
@given(
    price=st.integers(1, 10**24),
    market_fee_bps=st.integers(0, 1_000),
    limit=st.integers(1, 3),
    funded=st.integers(0, 3),
    steps=operations(*OPERATIONS, *SELLER),
)
def test_balances_always_sum_to_total_supply(
    embedded_ledger: Ledger,
    price: int,
    market_fee_bps: int,
    limit: int,
    funded: int,
    steps: list[tuple[str, tuple[Any, ...]]],
) -> None:
    ledger = embedded_ledger
    with isolated(ledger):
        market = Market(ledger, price, market_fee_bps, limit)
        market.mt_mint(1, funded, 0)
        for name, args in steps:
            getattr(market, name)(*args)
        market.check_all()
        market.check_orders()


@examples(12)
@given(
    price=st.integers(1, 10**24),
    limit=st.integers(1, 3),
    steps=operations(
        "order",
        "order",
        "order_for",
        "order_for",
        "buy_and_order",
        "dispense_and_order",
        "dt_mint",
        "dispense",
        "transfer",
        "set_timeout",
        "set_state",
        "set_list",
    ),
)
def test_every_order_spends_exactly_one_datatoken(
    embedded_ledger: Ledger, price: int, limit: int, steps: list[tuple[str, tuple[Any, ...]]]
) -> None:
    ledger = embedded_ledger
    with isolated(ledger):
        market = Market(ledger, price, 100, limit)
        # Nobody holds a datatoken yet: these orders must fail with NoDatatoken.
        market.order("fixed", 4, 0, b"\x01")
        market.order_for("free", 4, 1, 0, b"")
        market.mt_mint(1, 2, 0)
        market.mt_mint(3, 1, 0)
        for name, args in steps:
            getattr(market, name)(*args)
        market.check_all()
        market.check_orders()


@examples(12)
@given(
    price=st.integers(1, 10**6),
    steps=operations(
        "buy_and_order",
        "buy_and_order",
        "dispense_and_order",
        "order",
        "dt_mint",
        "set_timeout",
        "set_timeout",
        "set_state",
        "set_list",
    ),
)
def test_nobody_pays_for_an_order_that_does_not_serve(
    embedded_ledger: Ledger, price: int, steps: list[tuple[str, tuple[Any, ...]]]
) -> None:
    """A seller who changes terms, disables the dataset or deny-lists a buyer never
    takes money for nothing: every refusal happens before a token moves (the model's
    balances), every paid order serves at once, and no paid order's expiry changes."""
    ledger = embedded_ledger
    with isolated(ledger):
        market = Market(ledger, price, 100, 3)
        for who in range(len(ACTORS)):
            market.mt_mint(who, 3, 0)
        for name, args in steps:
            getattr(market, name)(*args)
            market.check_orders()
        market.check_all()


# -- (c): only the controller ------------------------------------------------------------

CONTROLLED = (
    "update",
    "set_state",
    "set_service",
    "mint",
    "grant",
    "deny",
    "revoke",
    "set_list",
    "set_price",
)
SERVICES = (0, 1, 2, 3)


@dataclasses.dataclass(frozen=True)
class Controlled:
    """A published dataset with one pending and one granted access request."""

    ledger: Ledger
    dataset: int
    datatoken: Datatoken
    pending: int
    granted: int

    @classmethod
    def publish(cls, ledger: Ledger) -> Controlled:
        dataset = launch(ledger)
        pending = request(ledger, BUYER, dataset)
        granted = request(ledger, OTHER, dataset)
        grant(ledger, granted)
        return cls(ledger, dataset, ledger.datatoken(dataset), pending, granted)

    def fingerprint(self, account: str, sid: int) -> dict[Any, Any]:
        """Everything a controller-only call with these arguments could change."""
        ledger, ds, dt = self.ledger, self.dataset, self.datatoken
        fp: dict[Any, Any] = {
            "dataset": ledger.data_nft.get_dataset(ds),
            "price": ledger.exchange.price(ds),
            "supply": dt.total_supply(),
            ("balance", account): dt.balance_of(account),
            ("list", account): ledger.access.list_of(ds, account),
            ("service", sid): dt.service_timeout(sid),
        }
        for request_id in (self.pending, self.granted):
            fp["request", request_id] = ledger.access.get_request(request_id).status
        return fp

    def action(
        self, name: str, args: tuple[Any, ...]
    ) -> tuple[dict[str, Any], Callable[[dict[Any, Any]], dict[Any, Any]]]:
        """The transaction of controller-only call `name`, and the changes it makes."""
        text, number, sid, who, kind, state = args
        account = ACTORS[who].address
        ledger, ds, dt = self.ledger, self.dataset, self.datatoken
        if name == "update":
            meta, manifest, root = h(text), h(text + "/manifest"), h(text + "/root")
            tx = ledger.data_nft.prepare("update", ds, meta, text, manifest, root)
            return tx, lambda fp: {
                "dataset": dataclasses.replace(
                    fp["dataset"],
                    version=fp["dataset"].version + 1,
                    metadata_hash=meta,
                    metadata_uri=text,
                    manifest_hash=manifest,
                    merkle_root=root,
                )
            }
        if name == "set_state":
            tx = ledger.data_nft.prepare("set_state", ds, int(state))
            return tx, lambda fp: {"dataset": dataclasses.replace(fp["dataset"], state=state)}
        if name == "set_service":
            return dt.prepare("set_service", sid, number), lambda fp: {("service", sid): number}
        if name == "mint":
            return dt.prepare("mint", account, number), lambda fp: {
                "supply": fp["supply"] + number,
                ("balance", account): fp["balance", account] + number,
            }
        if name == "grant":
            tx = ledger.access.prepare("grant", self.pending, ledger.chain.timestamp() + FAR)
            return tx, lambda fp: {("request", self.pending): RequestStatus.GRANTED}
        if name == "deny":
            tx = ledger.access.prepare("deny", self.pending, text)
            return tx, lambda fp: {("request", self.pending): RequestStatus.DENIED}
        if name == "revoke":
            tx = ledger.access.prepare("revoke", self.granted)
            return tx, lambda fp: {("request", self.granted): RequestStatus.REVOKED}
        if name == "set_list":
            tx = ledger.access.prepare("set_list", ds, account, int(kind))
            return tx, lambda fp: {("list", account): kind}
        assert name == "set_price"
        return ledger.exchange.prepare("set_price", ds, number), lambda fp: {"price": number}


@examples(12)
@given(
    name=st.sampled_from(CONTROLLED),
    args=st.tuples(
        st.text(max_size=24),
        st.integers(1, 10**24),
        st.sampled_from(SERVICES),
        actor,
        st.sampled_from(ListKind),
        st.sampled_from([DatasetState.DISABLED, DatasetState.RETIRED]),
    ),
    intruder=st.sampled_from(NOT_OWNERS),
    heir=st.sampled_from(NOT_OWNERS),
)
def test_only_the_controller_changes_a_dataset(
    embedded_ledger: Ledger, name: str, args: tuple[Any, ...], intruder: Any, heir: Any
) -> None:
    ledger = embedded_ledger
    with isolated(ledger):
        world = Controlled.publish(ledger)
        tx, changes = world.action(name, args)
        _, _, sid, who, _, _ = args

        def fingerprint() -> dict[Any, Any]:
            return world.fingerprint(ACTORS[who].address, sid)

        before = fingerprint()
        with pytest.raises(NotController):
            send(ledger, intruder, tx, name)
        assert fingerprint() == before

        # Transferring the NFT hands control over: the old holder is now an intruder.
        handover = ledger.data_nft.prepare(
            "transferFrom", OWNER.address, heir.address, world.dataset
        )
        send(ledger, OWNER, handover, "transferFrom")
        assert ledger.data_nft.controller(world.dataset) == heir.address
        # The heir re-keys first (a new version with a new manifest): until then the
        # dataset awaits it and most changes are refused (test_transfer_lifecycle).
        rekey = ledger.data_nft.prepare(
            "update", world.dataset, h("rekeyed"), "", h("rekeyed manifest"), h("rekeyed root")
        )
        send(ledger, heir, rekey, "update")
        before = fingerprint()
        assert before["dataset"].controller == heir.address
        with pytest.raises(NotController):
            send(ledger, OWNER, tx, name)
        assert fingerprint() == before
        send(ledger, heir, tx, name)
        assert fingerprint() == {**before, **changes(before)}


# -- (d): a revoked grant stays revoked -----------------------------------------------------

CONSUMERS = (BUYER, OTHER)
MAX_LIVE_GRANTS = 8


class Registry:
    """One dataset's access records, with a model of every request's status."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.dataset = launch(ledger, Pricing.NONE)
        self.first = ledger.access.request_count() + 1
        self.consumer: dict[int, str] = {}
        self.status: dict[int, RequestStatus] = {}
        self.granted: list[int] = []  # request ids, in the order they were granted
        self.lists = {c.address: ListKind.NONE for c in CONSUMERS}

    def _pick(self, ref: int) -> int:
        ids = sorted(self.status)
        return ids[ref % len(ids)] if ids else self.first

    def request(self, who: int) -> None:
        consumer = CONSUMERS[who].address
        denied = self.lists[consumer] == ListKind.DENY
        refusal: Refusal = (InvalidState, "deny-listed") if denied else None
        tx = self.ledger.access.prepare("request", self.dataset, "purpose", b"")
        if expect(self.ledger, CONSUMERS[who], tx, "request", refusal) is not None:
            request_id = self.first + len(self.status)
            self.consumer[request_id] = consumer
            self.status[request_id] = RequestStatus.PENDING
        self.check(set())

    def grant(self, ref: int) -> None:
        request_id = self._pick(ref)
        if request_id not in self.status:
            refusal: Refusal = (NotFound, "no such request")
        elif self.status[request_id] != RequestStatus.PENDING:
            refusal = (InvalidState, "not pending")
        elif self.lists[self.consumer[request_id]] == ListKind.DENY:
            refusal = (InvalidState, "deny-listed")
        elif len(self.live(self.consumer[request_id])) >= MAX_LIVE_GRANTS:
            refusal = (LimitExceeded, "too many live grants")
        else:
            refusal = None
        expires_at = self.ledger.chain.timestamp() + FAR
        tx = self.ledger.access.prepare("grant", request_id, expires_at)
        if expect(self.ledger, OWNER, tx, "grant", refusal) is not None:
            self.status[request_id] = RequestStatus.GRANTED
            self.granted.append(request_id)
        self.check({request_id})

    def deny(self, ref: int) -> None:
        request_id = self._pick(ref)
        if request_id not in self.status:
            refusal: Refusal = (NotFound, "no such request")
        elif self.status[request_id] != RequestStatus.PENDING:
            refusal = (InvalidState, "not pending")
        else:
            refusal = None
        tx = self.ledger.access.prepare("deny", request_id, "no")
        if expect(self.ledger, OWNER, tx, "deny", refusal) is not None:
            self.status[request_id] = RequestStatus.DENIED
        self.check({request_id})

    def revoke(self, ref: int) -> None:
        request_id = self._pick(ref)
        if request_id not in self.status:
            refusal: Refusal = (NotFound, "no such request")
        elif self.status[request_id] != RequestStatus.GRANTED:
            refusal = (InvalidState, "not granted")
        else:
            refusal = None
        tx = self.ledger.access.prepare("revoke", request_id)
        if expect(self.ledger, OWNER, tx, "revoke", refusal) is not None:
            self.status[request_id] = RequestStatus.REVOKED
        self.check({request_id})

    def set_list(self, who: int, kind: ListKind) -> None:
        consumer = CONSUMERS[who].address
        tx = self.ledger.access.prepare("set_list", self.dataset, consumer, int(kind))
        expect(self.ledger, OWNER, tx, "set_list", None)
        self.lists[consumer] = kind
        self.check(set())

    def live(self, consumer: str) -> list[int]:
        """The consumer's granted, unrevoked requests (none expire in these tests)."""
        return [
            r
            for r in self.granted
            if self.status[r] == RequestStatus.GRANTED and self.consumer[r] == consumer
        ]

    def check(self, requests: set[int]) -> None:
        access = self.ledger.access
        assert access.request_count() == self.first - 1 + len(self.status)
        for request_id in requests & set(self.status):
            assert access.get_request(request_id).status == self.status[request_id]
        for c in CONSUMERS:
            live = self.live(c.address)
            assert access.live_grants(self.dataset, c.address) == live
            # Revoked, denied and pending requests never give access; any live grant does.
            kind = self.lists[c.address]
            expected = kind != ListKind.DENY and (kind == ListKind.ALLOW or bool(live))
            assert access.has_access(self.dataset, c.address) == expected

    def check_all(self) -> None:
        self.check(set(self.status))


@examples(15)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("request"), st.tuples(st.integers(0, 1))),
            st.tuples(st.sampled_from(["grant", "deny", "revoke"]), st.tuples(st.integers(0, 7))),
            st.tuples(st.just("grant"), st.tuples(st.integers(0, 7))),
            st.tuples(st.just("revoke"), st.tuples(st.integers(0, 7))),
            st.tuples(st.just("set_list"), st.tuples(st.integers(0, 1), st.sampled_from(ListKind))),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_revoked_grant_stays_revoked(
    embedded_ledger: Ledger, steps: list[tuple[str, tuple[Any, ...]]]
) -> None:
    ledger = embedded_ledger
    with isolated(ledger):
        registry = Registry(ledger)
        registry.request(0)
        registry.grant(0)
        registry.request(1)
        for name, args in steps:
            getattr(registry, name)(*args)
        registry.check_all()
        # Whatever happened, the controller cannot bring a revoked grant back.
        for request_id, status in registry.status.items():
            if status == RequestStatus.REVOKED:
                tx = ledger.access.prepare("grant", request_id, ledger.chain.timestamp() + FAR)
                with pytest.raises(InvalidState):
                    send(ledger, OWNER, tx, "grant")
                assert ledger.access.get_request(request_id).status == RequestStatus.REVOKED


def test_an_older_unrevoked_grant_still_gives_access(embedded_ledger: Ledger) -> None:
    # Found by the property test above: has_access used to read only the latest grant.
    ledger = embedded_ledger
    dataset = publish(ledger, Pricing.NONE).dataset
    older, _ = ledger.access.request(BUYER, dataset, "first")
    ledger.access.grant(OWNER, older, ledger.chain.timestamp() + FAR)
    newer, _ = ledger.access.request(BUYER, dataset, "second")
    ledger.access.grant(OWNER, newer, ledger.chain.timestamp() + FAR)
    ledger.access.revoke(OWNER, newer)
    assert ledger.access.get_request(older).status == RequestStatus.GRANTED
    assert ledger.access.get_request(older).expires_at > ledger.chain.timestamp()
    assert ledger.access.has_access(dataset, BUYER.address)


def test_an_expired_newer_grant_does_not_hide_an_older_live_one(embedded_ledger: Ledger) -> None:
    ledger = embedded_ledger
    dataset = launch(ledger, Pricing.NONE)
    older, newer = request(ledger, BUYER, dataset), request(ledger, BUYER, dataset)
    grant(ledger, older)
    tx = ledger.access.prepare("grant", newer, ledger.chain.timestamp() + 100)
    send(ledger, OWNER, tx, "grant")
    assert ledger.access.live_grants(dataset, BUYER.address) == [older, newer]
    ledger.chain.advance_time(200)
    assert ledger.access.live_grants(dataset, BUYER.address) == [older]
    assert ledger.access.has_access(dataset, BUYER.address)


# -- (e): fees never exceed their bounds --------------------------------------------------


@examples(20)
@given(
    price=st.integers(1, 10**24),
    amount=st.integers(1, 3),
    market_fee_bps=st.integers(0, 1_000),
    protocol_fee_bps=st.integers(0, 500),
    one_transaction=st.booleans(),
)
def test_fees_stay_within_bounds_and_match_payments(
    embedded_ledger: Ledger,
    price: int,
    amount: int,
    market_fee_bps: int,
    protocol_fee_bps: int,
    one_transaction: bool,
) -> None:
    ledger = embedded_ledger
    ex, mt = ledger.exchange, ledger.market_token
    max_market, max_protocol = ex.max_market_fee_bps(), ex.max_protocol_fee_bps()
    if one_transaction:
        amount = 1  # buy_and_order buys exactly one access
    with isolated(ledger):
        fee = ex.prepare("propose_protocol_fee", protocol_fee_bps, PROTOCOL.address)
        send(ledger, DEPLOYER, fee, "propose_protocol_fee")
        ledger.chain.advance_time(ex.protocol_fee_delay())
        send(ledger, DEPLOYER, ex.prepare("apply_protocol_fee"), "apply_protocol_fee")
        assert ex.protocol_fee() == (protocol_fee_bps, PROTOCOL.address)
        dataset = launch(ledger, price=price, market_fee_bps=market_fee_bps)
        q = ex.quote(dataset, amount)
        total = price * amount
        assert q.total == total
        assert q.market_fee == total * market_fee_bps // BPS
        assert q.protocol_fee == total * protocol_fee_bps // BPS
        assert q.publisher_amount + q.market_fee + q.protocol_fee == total
        assert q.market_fee * BPS <= total * max_market
        assert q.protocol_fee * BPS <= total * max_protocol

        send(ledger, DEPLOYER, mt.prepare("mint", BUYER.address, total), "mint")
        parties = (BUYER.address, OWNER.address, MARKET.address, PROTOCOL.address)
        before = [mt.balance_of(a) for a in parties]
        dt = ledger.datatoken(dataset)
        if one_transaction:
            receipt_hash = ex.buy_and_order(BUYER, dataset, dt).tx.tx_hash
            assert dt.balance_of(BUYER.address) == 0
        else:
            send(ledger, BUYER, mt.prepare("approve", ex.address, total), "approve")
            receipt_hash = ex.buy(BUYER, dataset, amount, total).tx_hash
            assert dt.balance_of(BUYER.address) == amount
        after = [mt.balance_of(a) for a in parties]
        deltas = [b - a for a, b in zip(before, after, strict=True)]
        assert deltas == [-total, q.publisher_amount, q.market_fee, q.protocol_fee]
        receipt = ledger.chain.w3.eth.get_transaction_receipt(receipt_hash)
        expected = [(BUYER.address, OWNER.address, q.publisher_amount)]
        expected += [(BUYER.address, MARKET.address, q.market_fee)] if q.market_fee else []
        expected += [(BUYER.address, PROTOCOL.address, q.protocol_fee)] if q.protocol_fee else []
        assert transfers(receipt, mt.address) == expected


@examples(10)
@given(
    market_fee_bps=st.integers(1_001, 2**16 - 1),
    protocol_fee_bps=st.integers(501, BPS),
    price=st.integers(1, 10**24),
)
def test_fees_above_their_bounds_are_refused(
    embedded_ledger: Ledger, market_fee_bps: int, protocol_fee_bps: int, price: int
) -> None:
    ledger = embedded_ledger
    ex = ledger.exchange
    with isolated(ledger):
        fee_before = ex.protocol_fee()
        tx = ex.prepare("propose_protocol_fee", protocol_fee_bps, PROTOCOL.address)
        with pytest.raises(LimitExceeded):
            send(ledger, DEPLOYER, tx, "propose_protocol_fee")
        assert ex.protocol_fee() == fee_before

        dataset = launch(ledger, Pricing.NONE)
        tx = ex.prepare("create", dataset, price, market_fee_bps, MARKET.address)
        with pytest.raises(LimitExceeded):
            send(ledger, OWNER, tx, "create")
        assert ex.price(dataset) == 0
        assert not ex.is_active(dataset)
        assert ex.market_fee(dataset) == (0, ZERO)


# -- (f): publish is all or nothing ---------------------------------------------------------

FAULTS: dict[str, tuple[type[ContractRuleError], str]] = {
    "unknown pricing": (InvalidArgument, "unknown pricing"),
    "zero price": (InvalidArgument, "zero price"),
    "fee above bound": (LimitExceeded, "above bound"),
    "zero fee recipient": (InvalidArgument, "zero address"),
    "zero dispenser limit": (InvalidArgument, "zero amount"),
    "zero order timeout": (InvalidArgument, "zero order timeout"),
    "empty metadata hash": (InvalidArgument, "empty metadata hash"),
}


@st.composite
def faulty_publish(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    """A publish with exactly one fault (the rest valid and random), as the raw ABI tuple."""
    fault = draw(st.sampled_from(sorted(FAULTS)))
    metadata = draw(st.binary(min_size=32, max_size=32).filter(any))
    fields: dict[str, Any] = {
        "metadata_hash": bytes(32) if fault == "empty metadata hash" else metadata,
        "metadata_uri": draw(st.text(max_size=40)),
        "manifest_hash": draw(st.binary(min_size=32, max_size=32)),
        "merkle_root": draw(st.binary(min_size=32, max_size=32)),
        "order_timeout": 0 if fault == "zero order timeout" else draw(st.integers(1, 10**8)),
        "service_id": draw(st.integers(0, 3)),
        "pricing": draw(st.sampled_from(Pricing)),
        "price": draw(st.integers(1, 10**24)),
        "market_fee_bps": draw(st.integers(0, 1_000)),
        "market_fee_recipient": MARKET.address,
        "dispenser_max_per_address": draw(st.integers(1, 10)),
    }
    if fault == "unknown pricing":
        fields["pricing"] = draw(st.integers(3, 255))
    elif fault == "zero price":
        fields.update(pricing=Pricing.FIXED, price=0)
    elif fault == "fee above bound":
        fields.update(pricing=Pricing.FIXED, market_fee_bps=draw(st.integers(1_001, BPS)))
    elif fault == "zero fee recipient":
        fields.update(
            pricing=Pricing.FIXED,
            market_fee_bps=draw(st.integers(1, 1_000)),
            market_fee_recipient=ZERO,
        )
    elif fault == "zero dispenser limit":
        fields.update(pricing=Pricing.FREE, dispenser_max_per_address=0)
    fields["pricing"] = int(fields["pricing"])
    return fault, tuple(fields.values())


def ledger_totals(ledger: Ledger) -> dict[str, Any]:
    nft = ledger.chain.w3.eth.contract(
        address=ledger.data_nft.address,
        abi=abi("DataNFT"),
    )
    mt = ledger.market_token
    totals: dict[str, Any] = {
        "dataset_count": ledger.data_nft.dataset_count(),
        "nft_supply": nft.functions.totalSupply().call(),
        "mt_supply": mt.total_supply(),
        "request_count": ledger.access.request_count(),
        # The Factory's nonce counts the datatoken clones it ever created.
        "factory_nonce": ledger.chain.w3.eth.get_transaction_count(ledger.factory.address),
    }
    for a in (*ACTORS, DEPLOYER):
        totals["nft", a.address] = nft.functions.balanceOf(a.address).call()
        totals["mt", a.address] = mt.balance_of(a.address)
    return totals


@examples(15)
@given(case=faulty_publish())
def test_publish_is_all_or_nothing(
    embedded_ledger: Ledger, case: tuple[str, tuple[Any, ...]]
) -> None:
    ledger = embedded_ledger
    fault, params = case
    cls, reason = FAULTS[fault]
    with isolated(ledger):
        launch(ledger)  # something already on the ledger
        before = ledger_totals(ledger)
        tx = ledger.factory.prepare("publish", params)
        with pytest.raises(cls, match=reason):
            send(ledger, OWNER, tx, "publish", gas=PUBLISH_GAS)
        assert ledger_totals(ledger) == before
        # The failed publish left no gap: the next dataset takes the next id.
        assert launch(ledger) == before["dataset_count"] + 1
        assert ledger.data_nft.dataset_count() == before["dataset_count"] + 1
