"""Job flow on the embedded chain through a real compute node on loopback."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from pathlib import Path

import httpx
import pytest
from compute_helpers import breast_cancer, compute_dataset, identity, running, write_csv

from datagora.compute import JobRefused, Limits, Sandbox, open_result
from datagora.compute.jobs import algorithm_hash
from datagora.crypto.errors import CryptoError
from datagora.ledger import JobStatus, Ledger
from helpers import BUYER, OTHER, OWNER

TRAIN = """
import json
from sklearn.linear_model import LogisticRegression

def run(inputs, params, output_dir):
    frame = next(iter(inputs.values())).frame
    x, y = frame.drop(columns=[params["target"]]), frame[params["target"]]
    model = LogisticRegression(max_iter=params["max_iter"]).fit(x, y)
    (output_dir / "metrics.json").write_text(json.dumps({"rows": len(frame),
        "train_accuracy": model.score(x, y)}))
    print("trained on", len(frame), "rows")
"""

COUNT = """
import json
def run(inputs, params, output_dir):
    (output_dir / "count.json").write_text(json.dumps({"n": len(inputs[%d].frame)}))
"""


@pytest.fixture
def setup(embedded_ledger: Ledger, tmp_path: Path):
    buyer = identity(BUYER)
    dataset, order = compute_dataset(embedded_ledger, OWNER, buyer)
    data = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sandbox = Sandbox(Limits(cpu_s=30, wall_s=60, memory_bytes=2 << 30), scratch_dir=scratch)
    with running(
        ledger=embedded_ledger,
        operator=identity(OWNER),
        datasets={dataset: data},
        data_dir=tmp_path / "node",
        sandbox=sandbox,
        owner_token="owner-secret",
        chain_lock=threading.RLock(),
    ) as node:
        yield embedded_ledger, node, buyer, dataset, order, scratch


def test_trusted_algorithm_runs_and_only_the_consumer_reads_the_result(setup) -> None:
    ledger, node, buyer, dataset, order, scratch = setup
    chain_id = ledger.chain.chain_id
    ledger.compute.set_trusted(OWNER, dataset, algorithm_hash(TRAIN.encode()), True)
    with node.client(buyer, chain_id) as client:
        job = client.submit(dataset, order, TRAIN, {"target": "target", "max_iter": 5000})
        info = client.wait(job)
        assert info["state"] == "succeeded", info
        sealed = client.sealed_result(job)
        with tarfile.open(fileobj=io.BytesIO(client.result(job))) as tar:
            metrics = json.loads(tar.extractfile("metrics.json").read())  # type: ignore[union-attr]
        assert metrics["rows"] == 569 and metrics["train_accuracy"] > 0.9
        assert "trained on 569 rows" in client.logs(job)
    record = ledger.compute.job(job)
    assert record.status == JobStatus.SUCCEEDED
    assert record.result == hashlib.sha256(sealed).digest()
    assert record.algorithm == algorithm_hash(TRAIN.encode())
    assert record.consumer == buyer.address
    # Another account can neither ask for the result nor open it.
    with (
        node.client(identity(OTHER), chain_id) as other,
        pytest.raises(JobRefused, match="only the job's consumer"),
    ):
        other.sealed_result(job)
    with pytest.raises(CryptoError):
        open_result(identity(OTHER), sealed, job, "result")
    # The result is bound to its job.
    with pytest.raises(CryptoError):
        open_result(buyer, sealed, job + 1, "result")
    # The private job directory is gone.
    assert list(scratch.iterdir()) == []


def test_untrusted_waits_for_review_then_deny_and_approve(setup) -> None:
    ledger, node, buyer, dataset, order, _ = setup
    code = COUNT % dataset
    owner = {"Authorization": "Bearer owner-secret"}
    with node.client(buyer, ledger.chain.chain_id) as client:
        denied = client.submit(dataset, order, code, {"try": 1})
        approved = client.submit(dataset, order, code, {"try": 2})
        for job in (denied, approved):
            assert client.status(job)["state"] == "pending"
            assert ledger.compute.job(job).status == JobStatus.PENDING
        pending = httpx.get(f"{node.url}/owner/jobs", headers=owner).json()
        assert [j["job"] for j in pending] == [denied, approved]
        assert (
            httpx.get(f"{node.url}/owner/jobs", headers={"Authorization": "x"}).status_code == 401
        )
        review = httpx.get(f"{node.url}/owner/jobs/{denied}/review", headers=owner).json()
        assert review["code"] == code and review["params"] == {"try": 1}
        r = httpx.post(f"{node.url}/owner/jobs/{denied}/deny", headers=owner, json={"reason": "no"})
        assert r.json()["state"] == "denied"
        assert ledger.compute.job(denied).status == JobStatus.DENIED
        r = httpx.post(f"{node.url}/owner/jobs/{approved}/approve", headers=owner)
        assert r.status_code == 200
        info = client.wait(approved)
        assert info["state"] == "succeeded", info
        with tarfile.open(fileobj=io.BytesIO(client.result(approved))) as tar:
            assert json.loads(tar.extractfile("count.json").read()) == {"n": 569}  # type: ignore[union-attr]
        assert ledger.compute.job(approved).status == JobStatus.SUCCEEDED
        with pytest.raises(JobRefused):
            client.result(denied)


def test_refusals(setup, embedded_ledger: Ledger) -> None:
    ledger, node, buyer, dataset, order, _ = setup
    # An order for another dataset does not open this one.
    other_dataset, other_order = compute_dataset(ledger, OWNER, buyer)
    code = COUNT % dataset
    count = ledger.compute.job_count()
    with node.client(buyer, ledger.chain.chain_id) as client:
        with pytest.raises(JobRefused, match="not an order of dataset"):
            client.submit(dataset, other_order, code, {})
        with pytest.raises(JobRefused, match="does not compute on dataset"):
            client.submit(other_dataset, other_order, code, {})
    # Someone without an order, using the buyer's order transaction.
    with (
        node.client(identity(OTHER), ledger.chain.chain_id) as other,
        pytest.raises(JobRefused, match="another consumer"),
    ):
        other.submit(dataset, order, code, {})
    # The code or the parameters differ from what was signed.
    import time

    from datagora.compute.jobs import params_hash
    from datagora.compute.requests import ComputeRequest
    from datagora.crypto.eip712 import new_nonce, sign_request

    request = ComputeRequest(
        consumer=buyer.address,
        dataset=dataset,
        order=bytes.fromhex(order[2:]),
        algorithm=algorithm_hash(code.encode()),
        params=params_hash({"a": 1}),
        nonce=new_nonce(),
        expires=int(time.time()) + 60,
    )
    # Signed for this chain only (no verifyingContract): refused, and the nonce is not spent.
    unbound = sign_request(buyer, request, ledger.chain.chain_id).to_json()
    answer = httpx.post(
        f"{node.url}/jobs", json={"request": unbound, "algorithm": code, "params": {"a": 1}}
    )
    assert answer.status_code == 401 and "contract" in answer.json()["detail"]
    signed = sign_request(
        buyer, request, ledger.chain.chain_id, verifying_contract=ledger.compute.address
    ).to_json()
    for body, status in (
        ({"request": signed, "algorithm": code + "#", "params": {"a": 1}}, 400),
        ({"request": signed, "algorithm": code, "params": {"a": 2}}, 400),
        ({"request": signed, "algorithm": code, "params": {"a": 1}}, 201),
        ({"request": signed, "algorithm": code, "params": {"a": 1}}, 401),  # replay
    ):
        assert httpx.post(f"{node.url}/jobs", json=body).status_code == status
    assert ledger.compute.job_count() == count + 1
