"""Bounded job queues: a burst beyond the per-consumer or per-dataset cap is refused
with 429 before anything is recorded on chain, and the node serves again once jobs end."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from compute_helpers import SERVICE, breast_cancer, compute_dataset, identity, running, write_csv

from datagora.compute import JobRefused, Limits, Sandbox
from datagora.ledger import Ledger
from helpers import BUYER, OTHER, OWNER

# Untrusted code waits for the owner's review: its jobs stay open until decided.
COUNT = """
import json
def run(inputs, params, output_dir):
    (output_dir / "count.json").write_text(json.dumps({"n": len(inputs[%d].frame)}))
"""


def test_burst_beyond_the_caps_is_refused_before_the_chain(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    ledger = embedded_ledger
    buyer, other = identity(BUYER), identity(OTHER)
    dataset, order = compute_dataset(ledger, OWNER, buyer)
    token = ledger.datatoken(dataset)
    token.mint(OWNER, other.address, 5)
    other_order = token.order(other.account, SERVICE, other.umbral_public_key).tx.tx_hash
    data = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sandbox = Sandbox(Limits(cpu_s=30, wall_s=60, memory_bytes=2 << 30), scratch_dir=scratch)
    code = COUNT % dataset
    with (
        running(
            ledger=ledger,
            operator=identity(OWNER),
            datasets={dataset: data},
            data_dir=tmp_path / "node",
            sandbox=sandbox,
            chain_lock=threading.RLock(),
            max_jobs_per_dataset=3,
            max_jobs_per_consumer=2,
        ) as node,
        node.client(buyer, ledger.chain.chain_id) as client,
        node.client(other, ledger.chain.chain_id) as rival,
    ):
        count = ledger.compute.job_count()
        # The consumer's burst, 8 at once: exactly its cap is admitted, the rest refused.
        outcomes: list[int | JobRefused] = []

        def submit(i: int) -> None:
            with node.client(buyer, ledger.chain.chain_id) as own:
                try:
                    outcomes.append(own.submit(dataset, order, code, {"i": i}))
                except JobRefused as exc:
                    outcomes.append(exc)

        started = time.perf_counter()
        burst = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join()
        print(f"burst of 8 submissions, cap 2: {time.perf_counter() - started:.2f} s")
        jobs = sorted(o for o in outcomes if isinstance(o, int))
        refusals = [o for o in outcomes if isinstance(o, JobRefused)]
        assert len(jobs) == 2 and len(refusals) == 6
        for refused in refusals:
            assert refused.status == 429 and "\n" not in str(refused)
            assert re.fullmatch(r"job queue full: .* \(at most 2\); retry when one finishes",
                                str(refused))  # fmt: skip
        started = time.perf_counter()
        with pytest.raises(JobRefused, match="job queue full"):
            client.submit(dataset, order, code, {"i": 8})
        print(f"one refused submission: {(time.perf_counter() - started) * 1000:.1f} ms")
        # Another consumer fills the dataset's cap, then meets it.
        jobs.append(rival.submit(dataset, other_order, code, {"i": 0}))
        with pytest.raises(JobRefused, match=f"dataset {dataset} already has 3 open jobs"):
            rival.submit(dataset, other_order, code, {"i": 1})
        # Nothing of the refused submissions reached the chain.
        assert ledger.compute.job_count() == count + 3
        # Once the owner denies one and a job runs to its end, the node takes jobs again.
        node.jobs.deny(jobs[0], "not this one")
        node.jobs.approve(jobs[1])
        assert client.wait(jobs[1])["state"] == "succeeded"
        started = time.perf_counter()
        again = client.submit(dataset, order, code, {"i": 9})
        print(f"one admitted submission: {(time.perf_counter() - started) * 1000:.1f} ms")
        assert client.status(again)["state"] == "pending"
        rival.submit(dataset, other_order, code, {"i": 2})
        with pytest.raises(JobRefused, match="job queue full"):
            client.submit(dataset, order, code, {"i": 10})
    assert ledger.compute.job_count() == count + 5


def test_caps_must_be_positive(embedded_ledger: Ledger, tmp_path: Path) -> None:
    from datagora.compute.jobs import JobService

    with pytest.raises(ValueError, match="at least 1"):
        JobService(embedded_ledger, identity(OWNER), {}, tmp_path, max_jobs_per_consumer=0)
