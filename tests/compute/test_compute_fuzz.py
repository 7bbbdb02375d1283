"""The compute node fuzzed from its own OpenAPI schema (schemathesis, a few cases per
operation) on the embedded chain, with one dataset it computes on and one order for
it: no 5xx, no hang, every status documented and every refusal explained, and a
refused request leaves the node's job list as it was. Then authenticated: a
schemathesis hook signs every fuzzed ``POST /jobs`` as the consumer (the algorithm's
and the params' digests made to match, half the time for the real dataset and
order), so the fuzzing reaches the order, policy and queue checks and the chain."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from compute_helpers import breast_cancer, compute_dataset, identity, running, write_csv

from datagora.compute.jobs import algorithm_hash, params_hash
from datagora.compute.requests import ComputeRequest
from datagora.crypto.eip712 import new_nonce, sign_request
from datagora.ledger import Ledger
from helpers import BUYER, OWNER
from schemafuzz import EXAMPLES, fuzz

TOKEN = "owner-secret"


@pytest.fixture
def node(embedded_ledger: Ledger, tmp_path: Path) -> Iterator[tuple[Any, int, str]]:
    dataset, order = compute_dataset(embedded_ledger, OWNER, identity(BUYER))
    data = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    with running(
        ledger=embedded_ledger,
        operator=identity(OWNER),
        datasets={dataset: data},
        data_dir=tmp_path / "node",
        owner_token=TOKEN,
        allow_weak_sandbox=True,
    ) as served:
        yield served, dataset, order


def signing(chain_id: int, contract: str, dataset: int, order: str) -> Any:
    """The `sign` hook: POST /jobs signed by BUYER over the fuzzed fields, the digests
    of the fuzzed algorithm and params, every other case for the real dataset and order."""
    consumer = identity(BUYER)
    turn = itertools.count()

    def sign(case: Any) -> Any:
        body = case.body
        if case.path != "/jobs" or not isinstance(body, dict):
            return case
        m = body.get("request", {}).get("message", {})
        real = next(turn) % 2 == 0
        try:
            request = ComputeRequest(
                consumer=consumer.address,
                dataset=dataset if real else int(m["dataset"]),
                order=bytes.fromhex((order if real else m["order"])[2:]),
                algorithm=algorithm_hash(str(body["algorithm"]).encode()),
                params=params_hash(body["params"]),
                nonce=new_nonce(),
                expires=int(time.time()) + 120,
            )
        except Exception:
            return case
        signed = sign_request(consumer, request, chain_id, verifying_contract=contract)
        body["request"] = signed.to_json()
        return case

    return sign


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_the_compute_node_survives_fuzzing_from_its_schema(
    node: tuple[Any, int, str], embedded_ledger: Ledger, signed: bool
) -> None:
    served, dataset, order = node
    url = served.url
    statuses: dict[int, int] = {}

    def jobs() -> Any:
        r = httpx.get(f"{url}/owner/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        return r.json(), served.jobs._store.by_state("queued")

    last = [jobs()]

    def refused_changes_nothing(case: Any, response: Any) -> None:
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if case.method != "POST":
            return
        now = jobs()
        if response.status_code >= 400:
            assert now == last[0], (case.method, case.path, response.status_code)
        last[0] = now

    sign = (
        signing(embedded_ledger.chain.chain_id, embedded_ledger.compute.address, dataset, order)
        if signed
        else None
    )
    report = fuzz(url, after_each=refused_changes_nothing, sign=sign)
    print(
        f"compute{' (signed)' if signed else ''}: {len(report.operations)} operations, "
        f"{report.examples} examples, statuses {dict(sorted(statuses.items()))} {report.seconds}"
    )
    assert not report.failures, "\n\n".join(report.failures)
    assert len(report.operations) >= 13, report.operations
    assert report.examples >= EXAMPLES * len(report.operations)
    if signed:  # past the signature, the order and the policy: jobs await review
        waiting = [j for j in last[0][0] if j["dataset"] == dataset]
        assert statuses.get(201, 0) == len(waiting) >= 1, (statuses, last[0])
