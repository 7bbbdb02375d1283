"""Compute jobs in the catalog and in the audit timeline."""

from __future__ import annotations

from datagora.audit import Kind, timeline
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.catalog.search import dataset_details
from datagora.ledger import Ledger, Pricing
from helpers import BUYER, OWNER, h, publish


def test_jobs_are_indexed_and_in_the_timeline(embedded_ledger: Ledger, database: Database) -> None:
    ledger = embedded_ledger
    dataset = publish(ledger, Pricing.NONE).dataset
    dt = ledger.datatoken(dataset)
    dt.set_service(OWNER, 1, 3600)
    dt.mint(OWNER, BUYER.address, 2)
    dt.order(BUYER, 1, b"")
    ledger.compute.set_trusted(OWNER, dataset, h("fedavg"), True)
    trusted, _ = ledger.compute.record_job(OWNER, dataset, 1, 1, BUYER.address, h("fedavg"), h("p"))
    ledger.compute.complete(OWNER, trusted, True, h("model"), 250, "")
    reviewed, _ = ledger.compute.record_job(OWNER, dataset, 1, 1, BUYER.address, h("other"), h("p"))
    ledger.compute.decide(OWNER, reviewed, False, "reads rows")
    Indexer(ledger, database).sync()
    details = dataset_details(database, dataset)
    assert details is not None
    assert [(j["job"], j["status"]) for j in details["jobs"]] == [
        (trusted, "succeeded"),
        (reviewed, "denied"),
    ]
    assert (
        details["jobs"][0]["result"] == h("model").hex() and details["jobs"][0]["epsilon"] == 0.25
    )
    kinds = [e.kind for e in timeline(ledger, dataset)]
    assert kinds.count(Kind.JOB) == 2 and Kind.JOB_RESULT in kinds and Kind.JOB_DECISION in kinds
    assert Kind.OTHER not in kinds


def test_prov_says_which_model_came_from_which_version(embedded_ledger: Ledger) -> None:
    from prov.model import ProvDocument

    from datagora.audit import prov_json, to_prov

    ledger = embedded_ledger
    dataset = publish(ledger, Pricing.NONE).dataset
    dt = ledger.datatoken(dataset)
    dt.set_service(OWNER, 1, 3600)
    dt.mint(OWNER, BUYER.address, 1)
    dt.order(BUYER, 1, b"")
    ledger.compute.set_trusted(OWNER, dataset, h("algo"), True)
    job, _ = ledger.compute.record_job(OWNER, dataset, 1, 1, BUYER.address, h("algo"), h("p"))
    ledger.compute.complete(OWNER, job, True, h("model"), 0, "")
    text = prov_json(to_prov(ledger, dataset))
    doc = ProvDocument.deserialize(content=text, format="json")
    derived = [
        (str(r.formal_attributes[0][1]), str(r.formal_attributes[1][1]))
        for r in doc.get_records()
        if r.get_type().localpart == "Derivation"
    ]
    assert (f"datagora:model/{h('model').hex()}", f"datagora:dataset/{dataset}/v1") in derived


def test_prov_has_job_decisions_failures_and_the_acting_operator(embedded_ledger: Ledger) -> None:
    from prov.model import ProvDocument

    from datagora.audit import prov_json, to_prov
    from helpers import OTHER

    ledger = embedded_ledger
    dataset = publish(ledger, Pricing.NONE).dataset
    dt = ledger.datatoken(dataset)
    dt.set_service(OWNER, 1, 3600)
    dt.mint(OWNER, BUYER.address, 1)
    dt.order(BUYER, 1, b"")
    ledger.compute.set_operator(OWNER, dataset, OTHER.address, True)  # a delegate runs jobs
    denied, _ = ledger.compute.record_job(OTHER, dataset, 1, 1, BUYER.address, h("a"), h("p"))
    ledger.compute.decide(OWNER, denied, False, "reads rows")
    failed, _ = ledger.compute.record_job(OTHER, dataset, 1, 1, BUYER.address, h("b"), h("p"))
    ledger.compute.decide(OWNER, failed, True)
    ledger.compute.complete(OTHER, failed, False, bytes(32), 0, "out of memory")
    doc = ProvDocument.deserialize(content=prov_json(to_prov(ledger, dataset)), format="json")
    records = doc.get_records()
    kinds = [
        str(r.get_asserted_types().pop().localpart)
        for r in records
        if r.get_type().localpart == "Activity"
    ]
    assert kinds.count("job") == 2 and "job-deny" in kinds and "job-approve" in kinds
    assert "compute-failed" in kinds
    delegations = [
        tuple(str(v) for _, v in r.formal_attributes[:2])
        for r in records
        if r.get_type().localpart == "Delegation"
    ]
    assert (f"datagora:account/{OTHER.address}", f"datagora:account/{OWNER.address}") in (
        delegations
    )
