"""Compute paid per job through an escrow (issue 15, 18), on the embedded chain and on anvil.

The consumer locks the per-job price; the escrow ends in exactly one of paid (the job
succeeded by its deadline, with its result hash on chain) or refunded (failed, denied,
cancelled, timed out, or never used). Each test names who would cheat and checks that
no token moves the wrong way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datagora.ledger import (
    DatasetState,
    EscrowState,
    JobStatus,
    Ledger,
    ListKind,
    Pricing,
    RefundReason,
)
from datagora.ledger.errors import (
    ContractRuleError,
    InsufficientFunds,
    InvalidArgument,
    InvalidState,
    NotAuthorized,
    NotController,
    NotFound,
    PriceAboveMaximum,
)
from helpers import BUYER, OTHER, OWNER, PRICE, fund, h, publish

JOB_PRICE = 3 * PRICE
TIMEOUT = 3600
KEY = b"\x03" + bytes(range(32))
ALGO, PARAMS = h("train.py"), h("{}")


def priced(ledger: Ledger, trusted: bool = True) -> int:
    """A compute dataset whose jobs are sold one by one at JOB_PRICE."""
    pub = publish(ledger, Pricing.NONE, service_id=1)
    ledger.compute.set_job_terms(OWNER, pub.dataset, JOB_PRICE, TIMEOUT)
    if trusted:
        ledger.compute.set_trusted(OWNER, pub.dataset, ALGO, True)
    return pub.dataset


def money(ledger: Ledger) -> tuple[int, int, int]:
    mt = ledger.market_token
    return (
        mt.balance_of(BUYER.address),
        mt.balance_of(OWNER.address),
        mt.balance_of(ledger.compute.address),
    )


def locked(ledger: Ledger, dataset: int, who: Any = BUYER, algo: bytes = ALGO) -> int:
    fund(ledger, who.address)
    ledger.market_token.approve(who, ledger.compute.address, JOB_PRICE)
    return ledger.compute.lock(who, dataset, algo, PARAMS, KEY).escrow


def record(ledger: Ledger, dataset: int, escrow: int, algo: bytes = ALGO) -> int:
    job, _ = ledger.compute.record_job(
        OWNER, dataset, 1, 1, BUYER.address, algo, PARAMS, escrow=escrow
    )
    return job


def test_a_completed_job_pays_the_owner_and_the_claim_carries_the_result_hash(
    ledger: Ledger,
) -> None:
    d = priced(ledger)
    escrow = locked(ledger, d)
    buyer0, owner0, held0 = money(ledger)
    assert held0 == JOB_PRICE  # the money waits in the registry, the owner has none yet
    rec = ledger.compute.escrow(escrow)
    assert (rec.consumer, rec.dataset, rec.amount, rec.state, rec.job) == (
        BUYER.address,
        d,
        JOB_PRICE,
        EscrowState.LOCKED,
        0,
    )
    job = record(ledger, d, escrow)
    assert ledger.compute.job_escrow(job) == escrow
    assert ledger.compute.escrow(escrow).job == job
    sealed_result_hash = h("the sealed result archive")
    tx = ledger.compute.complete(OWNER, job, True, sealed_result_hash, 0, "ok")
    receipt = ledger.chain.transaction_receipt(tx.tx_hash)
    claim = ledger.compute.settlement(receipt)
    assert claim is not None and claim["event"] == "EscrowPaid"
    # The consumer checks the SHA-256 of what it downloads against the claim's hash.
    assert claim["result"] == sealed_result_hash == ledger.compute.job(job).result
    assert (claim["payee"], claim["amount"]) == (OWNER.address, JOB_PRICE)
    assert money(ledger) == (buyer0, owner0 + JOB_PRICE, 0)
    assert ledger.compute.escrow(escrow).state == EscrowState.PAID
    # Settled once: neither a second claim nor a refund can follow.
    with pytest.raises(InvalidState):
        ledger.compute.complete(OWNER, job, True, h("again"))
    ledger.chain.advance_time(TIMEOUT + 10)
    with pytest.raises(InvalidState):
        ledger.compute.reclaim(BUYER, escrow)
    assert money(ledger) == (buyer0, owner0 + JOB_PRICE, 0)


@pytest.mark.parametrize("outcome", ["failed", "denied"])
def test_a_failed_or_denied_job_refunds_the_consumer(ledger: Ledger, outcome: str) -> None:
    d = priced(ledger, trusted=outcome == "failed")
    escrow = locked(ledger, d)
    before = money(ledger)
    job = record(ledger, d, escrow)
    if outcome == "failed":
        tx = ledger.compute.complete(OWNER, job, False, bytes(32), 0, "out of memory")
        reason, status = RefundReason.FAILED, JobStatus.FAILED
    else:
        tx = ledger.compute.decide(OWNER, job, False, "reads raw rows")
        reason, status = RefundReason.DENIED, JobStatus.DENIED
    refund = ledger.compute.settlement(ledger.chain.transaction_receipt(tx.tx_hash))
    assert refund is not None and refund["event"] == "EscrowRefunded"
    assert (refund["consumer"], refund["amount"], refund["reason"]) == (
        BUYER.address,
        JOB_PRICE,
        reason,
    )
    assert money(ledger) == (before[0] + JOB_PRICE, before[1], 0)
    assert ledger.compute.job(job).status == status
    assert ledger.compute.escrow(escrow).state == EscrowState.REFUNDED


def test_the_consumer_cancels_a_queued_job_and_the_owner_cancels_any_unsettled_one(
    ledger: Ledger,
) -> None:
    d = priced(ledger, trusted=False)
    pending = record(ledger, d, locked(ledger, d))
    before = money(ledger)
    with pytest.raises(NotController):  # someone else's job
        ledger.compute.cancel(OTHER, pending)
    ledger.compute.cancel(BUYER, pending)
    assert ledger.compute.job(pending).status == JobStatus.CANCELLED
    assert money(ledger)[0] == before[0] + JOB_PRICE
    with pytest.raises(InvalidState):  # cancelled is final
        ledger.compute.decide(OWNER, pending, True)
    # Approved (queued at the node): the consumer asks the node; the owner's side cancels.
    ledger.compute.set_trusted(OWNER, d, ALGO, True)
    queued = record(ledger, d, locked(ledger, d))
    with pytest.raises(NotController):
        ledger.compute.cancel(BUYER, queued)
    before = money(ledger)
    ledger.compute.cancel(OWNER, queued)
    assert money(ledger) == (before[0] + JOB_PRICE, before[1], before[2] - JOB_PRICE)
    with pytest.raises(InvalidState):  # nothing left to claim
        ledger.compute.complete(OWNER, queued, True, h("r"))


def test_a_job_not_settled_by_its_deadline_is_refunded_to_the_consumer(ledger: Ledger) -> None:
    d = priced(ledger)
    escrow = locked(ledger, d)
    job = record(ledger, d, escrow)
    before = money(ledger)
    with pytest.raises(InvalidState, match="deadline not reached"):
        ledger.compute.reclaim(BUYER, escrow)
    ledger.chain.advance_time(TIMEOUT + 10)
    ledger.compute.reclaim(OTHER, escrow)  # anyone may: the money goes to the consumer
    assert money(ledger)[0] == before[0] + JOB_PRICE
    assert ledger.compute.job(job).status == JobStatus.CANCELLED
    with pytest.raises(InvalidState):  # the owner cannot claim it afterwards
        ledger.compute.complete(OWNER, job, True, h("late"))
    # A result recorded after the deadline (nobody reclaimed) refunds instead of paying.
    late = locked(ledger, d)
    job2 = record(ledger, d, late)
    ledger.chain.advance_time(TIMEOUT + 10)
    owner0 = money(ledger)[1]
    ledger.compute.complete(OWNER, job2, True, h("late result"))
    assert ledger.compute.escrow(late).state == EscrowState.REFUNDED
    assert money(ledger)[1] == owner0


def test_an_unused_escrow_is_the_consumers_to_take_back(ledger: Ledger) -> None:
    d = priced(ledger)
    escrow = locked(ledger, d)
    with pytest.raises(NotAuthorized):
        ledger.compute.reclaim(OTHER, escrow)
    before = money(ledger)
    ledger.compute.reclaim(BUYER, escrow)
    assert money(ledger)[0] == before[0] + JOB_PRICE
    with pytest.raises(InvalidState):  # refunded: no job can use it now
        record(ledger, d, escrow)


def test_an_escrow_pays_only_for_its_own_job_once(ledger: Ledger) -> None:
    d = priced(ledger)
    ledger.compute.set_trusted(OWNER, d, h("other.py"), True)
    escrow = locked(ledger, d)
    with pytest.raises(InvalidArgument, match="another job"):  # the node swaps the code
        record(ledger, d, escrow, algo=h("other.py"))
    with pytest.raises(InvalidArgument, match="another job"):  # or the consumer
        ledger.compute.record_job(OWNER, d, 1, 1, OTHER.address, ALGO, PARAMS, escrow=escrow)
    record(ledger, d, escrow)
    with pytest.raises(InvalidState, match="already used"):
        record(ledger, d, escrow)
    with pytest.raises(NotController):  # only the owner's side records jobs
        ledger.compute.record_job(OTHER, d, 1, 1, BUYER.address, ALGO, PARAMS, escrow=escrow)


def test_refusals_happen_before_the_escrow_takes_money(ledger: Ledger) -> None:
    d = priced(ledger)
    fund(ledger, BUYER.address)
    ledger.market_token.approve(BUYER, ledger.compute.address, 10 * JOB_PRICE)
    before = money(ledger)
    ledger.compute.set_job_terms(OWNER, d, JOB_PRICE * 2, TIMEOUT)  # the seller front-runs
    with pytest.raises(PriceAboveMaximum):
        ledger.compute.lock(BUYER, d, ALGO, PARAMS, KEY, max_price=JOB_PRICE)
    ledger.access.set_list(OWNER, d, BUYER.address, ListKind.DENY)
    with pytest.raises(InvalidState, match="deny-listed"):
        ledger.compute.lock(BUYER, d, ALGO, PARAMS, KEY)
    ledger.access.set_list(OWNER, d, BUYER.address, ListKind.NONE)
    ledger.data_nft.set_state(OWNER, d, DatasetState.DISABLED)
    with pytest.raises(InvalidState, match="not active"):
        ledger.compute.lock(BUYER, d, ALGO, PARAMS, KEY)
    free = publish(ledger, Pricing.NONE, service_id=1).dataset
    with pytest.raises(NotFound, match="no per-job price"):
        ledger.compute.lock(BUYER, free, ALGO, PARAMS, KEY)
    assert money(ledger) == before
    with pytest.raises(NotController):
        ledger.compute.set_job_terms(BUYER, d, 1, TIMEOUT)
    with pytest.raises(InvalidArgument):
        ledger.compute.set_job_terms(OWNER, d, 1, 31 * 86400)
    with pytest.raises(InsufficientFunds):  # no allowance
        ledger.data_nft.set_state(OWNER, d, DatasetState.ACTIVE)
        ledger.market_token.approve(BUYER, ledger.compute.address, 0)
        ledger.compute.lock(BUYER, d, ALGO, PARAMS, KEY)
    # Disabled after the lock: the node cannot record the job, the consumer takes it back.
    ledger.market_token.approve(BUYER, ledger.compute.address, 10 * JOB_PRICE)
    ledger.compute.set_job_terms(OWNER, d, JOB_PRICE, TIMEOUT)
    escrow = ledger.compute.lock(BUYER, d, ALGO, PARAMS, KEY).escrow
    ledger.data_nft.set_state(OWNER, d, DatasetState.DISABLED)
    with pytest.raises(InvalidState, match="not active"):
        record(ledger, d, escrow)
    ledger.compute.reclaim(BUYER, escrow)
    assert money(ledger) == before


def test_orders_still_pay_for_jobs_where_there_is_no_escrow(ledger: Ledger) -> None:
    pub = publish(ledger, Pricing.NONE, service_id=1)
    with pytest.raises(ContractRuleError, match="no valid order"):
        ledger.compute.record_job(OWNER, pub.dataset, 1, 1, BUYER.address, ALGO, PARAMS)
    dt = ledger.datatoken(pub.dataset)
    dt.mint(OWNER, BUYER.address, 1)
    dt.order(BUYER, 1, KEY)
    job, _ = ledger.compute.record_job(OWNER, pub.dataset, 1, 1, BUYER.address, ALGO, PARAMS)
    assert ledger.compute.job_escrow(job) == 0
    ledger.compute.cancel(BUYER, job)  # pending: the consumer may withdraw it (no money)
    assert ledger.compute.job(job).status == JobStatus.CANCELLED


# -- the invariant: every escrow ends in exactly one of paid / refunded ---------------------


@contextlib.contextmanager
def isolated(ledger: Ledger) -> Iterator[None]:
    snapshot = ledger.chain.snapshot()
    try:
        yield
    finally:
        ledger.chain.revert(snapshot)


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                *("lock", "record", "approve", "deny", "succeed", "fail"),
                *("cancel_c", "cancel_o", "reclaim_c", "reclaim_x", "wait"),
            ]
        ),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ACTIONS, trusted=st.booleans())
def test_an_escrow_always_ends_paid_or_refunded_exactly_once(
    embedded_ledger: Ledger, steps: list[tuple[str, int]], trusted: bool
) -> None:
    """Whatever the owner, the consumer and anyone else do, in any order: money is
    conserved, an escrow is settled at most once and never changes after, a paid
    escrow's job succeeded with a result hash, and once every deadline has passed and
    everything left is reclaimed, each escrow is exactly one of paid or refunded."""
    ledger = embedded_ledger
    with isolated(ledger):
        d = priced(ledger, trusted=trusted)
        fund(ledger, BUYER.address, 50 * JOB_PRICE)
        ledger.market_token.approve(BUYER, ledger.compute.address, 50 * JOB_PRICE)
        total = sum(money(ledger))
        escrows: list[int] = []
        jobs: list[int] = []
        settled: dict[int, EscrowState] = {}

        def pick(items: list[int], i: int) -> int | None:
            return items[i % len(items)] if items else None

        for action, i in steps:
            escrow, job = pick(escrows, i), pick(jobs, i)
            try:
                if action == "lock":
                    escrows.append(ledger.compute.lock(BUYER, d, ALGO, PARAMS, KEY).escrow)
                elif action == "record" and escrow is not None:
                    jobs.append(record(ledger, d, escrow))
                elif action in ("approve", "deny") and job is not None:
                    ledger.compute.decide(OWNER, job, action == "approve")
                elif action in ("succeed", "fail") and job is not None:
                    ledger.compute.complete(OWNER, job, action == "succeed", h(f"r{job}"))
                elif action == "cancel_c" and job is not None:
                    ledger.compute.cancel(BUYER, job)
                elif action == "cancel_o" and job is not None:
                    ledger.compute.cancel(OWNER, job)
                elif action in ("reclaim_c", "reclaim_x") and escrow is not None:
                    ledger.compute.reclaim(BUYER if action == "reclaim_c" else OTHER, escrow)
                elif action == "wait":
                    ledger.chain.advance_time(TIMEOUT // 2 + 1)
            except ContractRuleError:
                pass  # a refused call changes nothing (checked below)
            assert sum(money(ledger)) == total
            held = 0
            for e in escrows:
                state = ledger.compute.escrow(e).state
                if e in settled:
                    assert state == settled[e]  # settled once, never again
                elif state != EscrowState.LOCKED:
                    settled[e] = state
                if state == EscrowState.LOCKED:
                    held += JOB_PRICE
            assert money(ledger)[2] == held  # the registry holds exactly the locked escrows
        ledger.chain.advance_time(TIMEOUT + 1)
        for e in escrows:
            if ledger.compute.escrow(e).state == EscrowState.LOCKED:
                ledger.compute.reclaim(OTHER, e)
        paid = refunded = 0
        for e in escrows:
            rec = ledger.compute.escrow(e)
            assert rec.state in (EscrowState.PAID, EscrowState.REFUNDED)
            if rec.state == EscrowState.PAID:
                paid += 1
                job_rec = ledger.compute.job(rec.job)
                assert job_rec.status == JobStatus.SUCCEEDED and job_rec.result != bytes(32)
            else:
                refunded += 1
        assert money(ledger)[2] == 0
        assert money(ledger)[1] == paid * JOB_PRICE
        assert paid + refunded == len(escrows)
