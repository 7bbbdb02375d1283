"""Compute requests are bound to their deployment (EIP-712 ``verifyingContract``).

The adversary runs a second deployment on the same chain (a test network beside the
real one, or one of its own) and replays there what a consumer or an owner signed for
it: job ids, chain id and accounts coincide, so only the domain's contract tells the
two apart.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import httpx
from compute_helpers import breast_cancer, compute_dataset, identity, running, write_csv

from datagora.compute import ComputeClient, JobRefused
from datagora.compute.jobs import job_bytes
from datagora.compute.node import REQUEST_HEADER
from datagora.compute.owner import encode_header, sign_owner_request
from datagora.compute.requests import JobRequest
from datagora.crypto.eip712 import new_nonce, sign_request
from datagora.ledger import JobStatus, Ledger, dev_account
from helpers import BUYER, OWNER

CODE = "def run(inputs, params, output_dir):\n    pass\n"


def _refused(call: object, *args: object) -> JobRefused:
    try:
        call(*args)  # type: ignore[operator]
    except JobRefused as exc:
        return exc
    raise AssertionError("accepted a request signed for another deployment")


def test_requests_signed_for_another_deployment_are_refused(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    ledger = embedded_ledger
    buyer, owner = identity(BUYER), identity(OWNER)
    dataset, order = compute_dataset(ledger, OWNER, buyer)
    data = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    other = Ledger.deploy(ledger.chain, dev_account(0))  # same chain id, other contracts
    assert other.compute.address != ledger.compute.address
    chain_id = ledger.chain.chain_id
    with (
        running(
            ledger=ledger,
            operator=owner,
            datasets={dataset: data},
            data_dir=tmp_path / "node",
            chain_lock=threading.RLock(),
        ) as node,
        node.client(buyer, chain_id) as mine,
        ComputeClient(node.url, buyer, chain_id, other.compute.address) as theirs,
    ):
        assert node.jobs.verifying_contract == ledger.compute.address
        job = mine.submit(dataset, order, CODE, {})  # untrusted: waits for review
        assert mine.status(job)["state"] == "pending"
        count = ledger.compute.job_count()

        # The consumer's requests for the other deployment: submit, read, cancel.
        for exc in (
            _refused(theirs.submit, dataset, order, CODE, {"again": 1}),
            _refused(theirs.status, job),
            _refused(theirs.cancel, job),
        ):
            assert exc.status == 401 and "contract" in str(exc)
        # The form signed before requests were bound (chain id only) is refused too.
        unbound = JobRequest(
            buyer.address, job_bytes(job), "cancel", new_nonce(), int(time.time()) + 60
        )
        header = base64.urlsafe_b64encode(
            json.dumps(sign_request(buyer, unbound, chain_id).to_json()).encode()
        ).decode()
        answer = httpx.post(f"{node.url}/jobs/{job}/cancel", headers={REQUEST_HEADER: header})
        assert answer.status_code == 401 and "contract" in answer.json()["detail"]

        # The owner's decision signed for the other deployment.
        for contract in (other.compute.address, None):
            signed = (
                sign_owner_request(owner, chain_id, "approve", job, verifying_contract=contract)
                if contract
                else sign_request(owner, _owner_request(owner.address, job), chain_id)
            )
            answer = httpx.post(
                f"{node.url}/owner/jobs/{job}/approve",
                headers={REQUEST_HEADER: encode_header(signed)},
            )
            assert answer.status_code == 401 and "contract" in answer.json()["detail"]

        # Nothing happened: the job still waits, and nothing more went on chain.
        assert ledger.compute.job_count() == count
        assert ledger.compute.job(job).status == JobStatus.PENDING
        assert mine.status(job)["state"] == "pending"
        # Signed for this deployment, the same requests work.
        assert mine.cancel(job)["state"] == "cancelled"
        assert ledger.compute.job(job).status == JobStatus.CANCELLED


def _owner_request(owner: str, job: int) -> object:
    from datagora.compute.requests import OwnerJobRequest

    return OwnerJobRequest(owner, job, "approve", bytes(32), new_nonce(), int(time.time()) + 60)
