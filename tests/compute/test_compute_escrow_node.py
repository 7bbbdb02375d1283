"""Jobs paid one by one through the escrow, end to end at a real compute node (loopback
HTTP, real sandbox), on the embedded chain and on anvil: a succeeded job pays the owner
with the hash of the result the consumer downloads; failed, denied and cancelled jobs
(by the consumer or the owner) are refunded; an escrow the node refuses is not used."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from compute_helpers import breast_cancer, identity, running, write_csv

from datagora.compute import ComputeClient, JobRefused, Limits, Sandbox
from datagora.compute.jobs import algorithm_hash, params_hash
from datagora.crypto.keys import Identity
from datagora.ledger import EscrowState, JobStatus, Ledger, Pricing
from helpers import BUYER, OWNER, PRICE, fund, publish

JOB_PRICE = 2 * PRICE
COUNT = """
import json
def run(inputs, params, output_dir):
    (output_dir / "count.json").write_text(json.dumps({"n": len(inputs[%d].frame)}))
"""
BROKEN = "def run(inputs, params, output_dir):\n    raise RuntimeError('boom')\n"


@contextmanager
def node_for(ledger: Ledger, tmp_path: Path) -> Iterator[tuple[int, ComputeClient, Identity]]:
    buyer = identity(BUYER)
    dataset = publish(ledger, Pricing.NONE, service_id=1).dataset
    ledger.compute.set_job_terms(OWNER, dataset, JOB_PRICE, 3600)
    ledger.compute.set_trusted(OWNER, dataset, algorithm_hash((COUNT % dataset).encode()), True)
    ledger.compute.set_trusted(OWNER, dataset, algorithm_hash(BROKEN.encode()), True)
    fund(ledger, buyer.address)
    ledger.market_token.approve(buyer.account, ledger.compute.address, 100 * JOB_PRICE)
    data = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sandbox = Sandbox(Limits(cpu_s=30, wall_s=60, memory_bytes=2 << 30), scratch_dir=scratch)
    with (
        running(
            ledger=ledger,
            operator=identity(OWNER),
            datasets={dataset: data},
            data_dir=tmp_path / "node",
            sandbox=sandbox,
            chain_lock=threading.RLock(),
        ) as node,
        node.client(buyer, ledger.chain.chain_id) as client,
    ):
        client.node = node  # type: ignore[attr-defined]
        yield dataset, client, buyer


def lock(
    ledger: Ledger, buyer: Identity, dataset: int, code: str, params: object
) -> tuple[int, str]:
    locked = ledger.compute.lock(
        buyer.account,
        dataset,
        algorithm_hash(code.encode()),
        params_hash(params),
        buyer.umbral_public_key,
    )
    return locked.escrow, locked.tx.tx_hash


def test_a_paid_job_runs_and_its_claim_carries_the_hash_of_what_the_consumer_gets(
    ledger: Ledger, tmp_path: Path
) -> None:
    with node_for(ledger, tmp_path) as (dataset, client, buyer):
        mt = ledger.market_token
        owner0, buyer0 = mt.balance_of(OWNER.address), mt.balance_of(buyer.address)
        code = COUNT % dataset
        escrow, tx = lock(ledger, buyer, dataset, code, {})
        job = client.submit(dataset, tx, code, {})
        assert client.wait(job)["state"] == "succeeded"
        sealed = client.sealed_result(job)
        claims = [
            e for e in ledger.events() if e.name == "EscrowPaid" and int(e["escrow"]) == escrow
        ]
        assert len(claims) == 1
        assert bytes(claims[0]["result"]) == hashlib.sha256(sealed).digest()
        assert b'"n": 569' in client.result(job)
        assert mt.balance_of(OWNER.address) == owner0 + JOB_PRICE
        assert mt.balance_of(buyer.address) == buyer0 - JOB_PRICE
        # The escrow paid for this job only: submitted again, it is refused.
        with pytest.raises(JobRefused, match="already used or settled"):
            client.submit(dataset, tx, code, {})


def test_failed_denied_and_cancelled_jobs_are_refunded(ledger: Ledger, tmp_path: Path) -> None:
    with node_for(ledger, tmp_path) as (dataset, client, buyer):
        node = client.node  # type: ignore[attr-defined]
        mt = ledger.market_token
        start = mt.balance_of(buyer.address)
        # Fails in the sandbox: refunded.
        escrow, tx = lock(ledger, buyer, dataset, BROKEN, {})
        job = client.submit(dataset, tx, BROKEN, {})
        assert client.wait(job)["state"] == "failed"
        assert ledger.compute.escrow(escrow).state == EscrowState.REFUNDED
        # Untrusted code waits for review: the consumer withdraws it through the node.
        review = "def run(inputs, params, output_dir):\n    pass\n"
        escrow, tx = lock(ledger, buyer, dataset, review, {"a": 1})
        job = client.submit(dataset, tx, review, {"a": 1})
        assert client.status(job)["state"] == "pending"
        assert client.cancel(job)["state"] == "cancelled"
        assert ledger.compute.job(job).status == JobStatus.CANCELLED
        assert ledger.compute.escrow(escrow).state == EscrowState.REFUNDED
        with pytest.raises(JobRefused, match="cancelled"):
            client.cancel(job)
        # The owner denies one and cancels another.
        escrow, tx = lock(ledger, buyer, dataset, review, {"a": 2})
        denied = client.submit(dataset, tx, review, {"a": 2})
        node.jobs.deny(denied, "no")
        escrow2, tx = lock(ledger, buyer, dataset, review, {"a": 3})
        cancelled = client.submit(dataset, tx, review, {"a": 3})
        node.jobs.cancel(cancelled)
        assert client.status(cancelled)["state"] == "cancelled"
        for e in (escrow, escrow2):
            assert ledger.compute.escrow(e).state == EscrowState.REFUNDED
        assert mt.balance_of(buyer.address) == start


def test_an_escrow_for_other_code_is_refused_and_stays_the_consumers(
    ledger: Ledger, tmp_path: Path
) -> None:
    with node_for(ledger, tmp_path) as (dataset, client, buyer):
        code = COUNT % dataset
        escrow, tx = lock(ledger, buyer, dataset, code, {})
        count = ledger.compute.job_count()
        with pytest.raises(JobRefused, match="another algorithm"):
            client.submit(dataset, tx, code + "\n# other", {})
        with pytest.raises(JobRefused, match="another algorithm"):
            client.submit(dataset, tx, code, {"x": 1})
        assert ledger.compute.job_count() == count
        # The compute service's access condition is checked before a job is admitted.
        ledger.access.set_condition(OWNER, dataset, 1, "order AND after:2099-01-01")
        with pytest.raises(JobRefused, match="not open before 2099-01-01"):
            client.submit(dataset, tx, code, {})
        ledger.access.set_condition(OWNER, dataset, 1, None)
        assert ledger.compute.job_count() == count
        assert ledger.compute.escrow(escrow).job == 0
        before = ledger.market_token.balance_of(buyer.address)
        ledger.compute.reclaim(buyer.account, escrow)
        assert ledger.market_token.balance_of(buyer.address) == before + JOB_PRICE
