"""The on-chain record of compute jobs."""

from __future__ import annotations

import pytest

from datagora.ledger import JobStatus, Ledger, Pricing
from datagora.ledger.errors import InvalidState, NoDatatoken, NotController, NotFound
from helpers import BUYER, OTHER, OWNER, h, publish


def compute_dataset(ledger: Ledger) -> int:
    pub = publish(ledger, Pricing.NONE)
    dt = ledger.datatoken(pub.dataset)
    dt.set_service(OWNER, 1, 3600)  # service 1: compute
    dt.mint(OWNER, BUYER.address, 1)
    dt.order(BUYER, 1, b"")
    return pub.dataset


def test_trusted_algorithm_runs_without_review(ledger: Ledger) -> None:
    d = compute_dataset(ledger)
    ledger.compute.publish_algorithm(BUYER, h("algo"), "https://example.org/train.py")
    assert ledger.compute.algorithm_publisher(h("algo")) == BUYER.address
    with pytest.raises(NotController):
        ledger.compute.set_trusted(OTHER, d, h("algo"), True)
    ledger.compute.set_trusted(OWNER, d, h("algo"), True)
    job, _ = ledger.compute.record_job(OWNER, d, 1, 1, BUYER.address, h("algo"), h("params"))
    assert ledger.compute.job(job).status == JobStatus.APPROVED
    ledger.compute.complete(OWNER, job, True, h("model"), 1500, "ok")
    rec = ledger.compute.job(job)
    assert (rec.status, rec.result, rec.algorithm, rec.consumer) == (
        JobStatus.SUCCEEDED,
        h("model"),
        h("algo"),
        BUYER.address,
    )
    with pytest.raises(InvalidState):
        ledger.compute.complete(OWNER, job, True, h("again"))


def test_review_operator_and_refusals(ledger: Ledger) -> None:
    d = compute_dataset(ledger)
    with pytest.raises(NoDatatoken):  # no compute order for OTHER
        ledger.compute.record_job(OWNER, d, 1, 1, OTHER.address, h("a"), h("p"))
    with pytest.raises(NotController):
        ledger.compute.record_job(OTHER, d, 1, 1, BUYER.address, h("a"), h("p"))
    ledger.compute.set_operator(OWNER, d, OTHER.address, True)
    job, _ = ledger.compute.record_job(OTHER, d, 1, 1, BUYER.address, h("unreviewed"), h("p"))
    assert ledger.compute.job(job).status == JobStatus.PENDING
    with pytest.raises(InvalidState):
        ledger.compute.complete(OTHER, job, True, h("r"))
    ledger.compute.decide(OWNER, job, False, "reads raw rows")
    assert ledger.compute.job(job).status == JobStatus.DENIED
    with pytest.raises(InvalidState):
        ledger.compute.decide(OWNER, job, True)
    with pytest.raises(NotFound):
        ledger.compute.job(999)
    ledger.compute.set_operator(OWNER, d, OTHER.address, False)
    with pytest.raises(NotController):
        ledger.compute.record_job(OTHER, d, 1, 1, BUYER.address, h("a"), h("p"))
