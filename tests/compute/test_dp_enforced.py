"""DP enforced by the node: which code runs unreviewed on a DP dataset, labels from the
declaration, OpenDP queries, and one budget per dataset that survives losing budget.db.

The liars: an owner who trusts the non-DP FedAvg on a DP dataset (its exact per-column
sums would leave, charged whatever epsilon the consumer declares), a consumer whose
arbitrary code claims to be DP, a table whose labels and cells are secrets, a second
consumer address hoping for a fresh budget, and a node that lost its budget file.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from compute_helpers import SERVICE, breast_cancer, compute_dataset, identity, running, write_csv

from datagora.compute import BudgetExceeded, JobRefused
from datagora.compute.algorithms import DP_ALGORITHMS, is_dp_algorithm, source
from datagora.compute.client import ComputeClient
from datagora.compute.jobs import ComputeDataset, algorithm_hash
from datagora.crypto.keys import Identity
from datagora.ledger import JobStatus, Ledger, dev_account
from helpers import BUYER, OTHER, OWNER

FEDAVG = source("fedavg-logistic")
FEDAVG_DP = source("fedavg-logistic-dp")
QUERY = source("dp-query")
BOUNDS = {"mean_radius": [0.0, 50.0], "worst_area": [0.0, 6000.0]}

SNEAKY = """
import json

def run(inputs, params, output_dir):
    frame = next(iter(inputs.values())).frame
    # "DP" in name only: exact sums of every column.
    (output_dir / "sums.json").write_text(json.dumps(frame.sum(numeric_only=True).to_dict()))
"""


def trust(ledger: Ledger, owner: Any, dataset: int, code: str) -> None:
    ledger.compute.set_trusted(owner, dataset, algorithm_hash(code.encode()), True)


def order_for(ledger: Ledger, owner: Any, dataset: int, consumer: Identity) -> str:
    token = ledger.datatoken(dataset)
    token.mint(owner, consumer.address, 5)
    return token.order(consumer.account, SERVICE, consumer.umbral_public_key).tx.tx_hash


def query_params(epsilon: float) -> dict[str, Any]:
    return {
        "dp": {"epsilon": epsilon, "bounds": BOUNDS},
        "queries": [
            {"op": "count"},
            {"op": "sum", "column": "mean_radius"},
            {"op": "mean", "column": "worst_area"},
        ],
    }


def result_json(client: ComputeClient, job: int, name: str) -> Any:
    with tarfile.open(fileobj=io.BytesIO(client.result(job))) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return json.loads(member.read())


def test_only_the_nodes_dp_algorithms_run_unreviewed(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    ledger = embedded_ledger
    buyer = identity(BUYER)
    dataset, order = compute_dataset(ledger, OWNER, buyer)
    trust(ledger, OWNER, dataset, FEDAVG)  # the owner's mistake: trusting non-DP code
    trust(ledger, OWNER, dataset, QUERY)
    path = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    spec = ComputeDataset(path, differential_privacy=True, epsilon_budget=10.0)
    assert {n for n in DP_ALGORITHMS} == {"fedavg-logistic-dp", "dp-query"}
    assert not is_dp_algorithm(algorithm_hash(FEDAVG.encode()))
    with (
        running(
            ledger=ledger,
            operator=identity(OWNER),
            datasets={dataset: spec},
            data_dir=tmp_path / "node",
            chain_lock=threading.RLock(),
        ) as node,
        node.client(buyer, ledger.chain.chain_id) as client,
    ):
        fedavg = {
            "mode": "stats",
            "features": list(BOUNDS),
            "target": "target",
            "dp": {"epsilon": 0.1, "bounds": BOUNDS},
        }
        count = ledger.compute.job_count()
        with pytest.raises(JobRefused, match="not one of the node's DP algorithms"):
            client.submit(dataset, order, FEDAVG, fedavg)
        assert ledger.compute.job_count() == count  # refused before anything is recorded
        assert client.budget(dataset)["spent"] == 0.0

        # Arbitrary code claiming DP: admitted only for review, and the review says it is not DP.
        sneaky = client.submit(dataset, order, SNEAKY, {"dp": {"epsilon": 0.1, "bounds": BOUNDS}})
        assert client.status(sneaky)["state"] == "pending"
        assert ledger.compute.job(sneaky).status == JobStatus.PENDING
        review = node.jobs.review(sneaky)
        assert review.differential_privacy is not None
        assert review.differential_privacy["enforced"] is False
        assert "NOT differentially private" in review.differential_privacy["note"]

        # The node's own DP query runs at once; its review would say it is DP.
        job = client.submit(dataset, order, QUERY, query_params(1.0))
        assert node.jobs.review(job).differential_privacy == {
            "required": True,
            "enforced": True,
            "note": node.jobs.review(job).differential_privacy["note"],  # type: ignore[index]
        }
        info = client.wait(job, 120)
        assert info["state"] == "succeeded", info
        doc = result_json(client, job, "results.json")
    frame = breast_cancer()
    values = {(r["op"], r.get("column")): r["value"] for r in doc["results"]}
    assert doc["epsilon"] == 1.0
    # Noisy but close: scales 4 (count), ~52 (sum), ~4 / 4 (mean's sum and count).
    assert abs(values[("count", None)] - len(frame)) < 60
    assert abs(values[("sum", "mean_radius")] - frame["mean_radius"].sum()) < 2_000
    assert abs(values[("mean", "worst_area")] - frame["worst_area"].mean()) < 300
    completed = {e["job"]: e["epsilon_milli"] for e in ledger.events() if e.name == "JobCompleted"}
    assert completed[job] == 1000


SECRETS = ["Xq-Malignant-Alpha-7731", "Xq-Benign-Beta-9902", "Xq-Rare-Gamma-4417"]
SECRET_CELL = "Zorblax Quentin-Vexmoor"


def secret_table() -> pd.DataFrame:
    frame = breast_cancer()[["mean_radius", "worst_area", "target"]].copy()
    labels = np.where(frame["target"] == 1, SECRETS[1], SECRETS[0]).astype(object)
    labels[5] = SECRETS[2]  # a third, rare label value
    frame["target"] = labels
    frame["mean_radius"] = frame["mean_radius"].astype(object)
    frame.loc[7, "mean_radius"] = SECRET_CELL  # a text cell in a numeric feature
    return frame


def test_no_label_or_cell_value_reaches_logs_results_or_errors(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    ledger = embedded_ledger
    buyer = identity(BUYER)
    dataset, order = compute_dataset(ledger, OWNER, buyer, tokens=10)
    trust(ledger, OWNER, dataset, FEDAVG_DP)
    trust(ledger, OWNER, dataset, QUERY)
    path = write_csv(secret_table(), tmp_path / "owner" / "secret.csv")
    spec = ComputeDataset(path, differential_privacy=True, epsilon_budget=50.0)
    train = {"features": list(BOUNDS), "target": "target", "dp": {"epsilon": 2.0, "bounds": BOUNDS}}
    runs = [
        (FEDAVG_DP, train),  # classes default to [0, 1]: no row matches, none is printed
        (FEDAVG_DP, {**train, "classes": ["no", "yes"]}),
        (FEDAVG_DP, {**train, "features": ["worst_area"]}),  # 3 label values, no text cell
        (FEDAVG_DP, {**train, "features": ["mean_radius", "target"]}),  # no bounds for target
        (QUERY, query_params(1.0)),  # the text cell is queried
        (
            QUERY,
            {
                "dp": {"epsilon": 1.0, "bounds": {"target": [0, 1]}},
                "queries": [{"op": "mean", "column": "target"}],
            },
        ),  # the labels queried
    ]
    seen: list[str] = []
    with (
        running(
            ledger=ledger,
            operator=identity(OWNER),
            datasets={dataset: spec},
            data_dir=tmp_path / "node",
            chain_lock=threading.RLock(),
        ) as node,
        node.client(buyer, ledger.chain.chain_id) as client,
    ):
        jobs = [client.submit(dataset, order, code, params) for code, params in runs]
        for job in jobs:
            info = client.wait(job, 120)
            seen += [json.dumps(info), client.logs(job)]
            if info["state"] == "succeeded":
                seen.append(client.result(job).decode("latin-1"))
        states = [client.status(j)["state"] for j in jobs]
        weights = result_json(client, jobs[0], "weights.json") if states[0] == "succeeded" else {}
    notes = [e["note"] for e in ledger.events() if e.name == "JobCompleted"]
    text = "\n".join(seen + notes)
    for secret in [*SECRETS, SECRET_CELL, "Zorblax", "7731", "9902", "4417"]:
        assert secret not in text, secret
    assert states == ["succeeded"] * 3 + ["failed"] + ["succeeded"] * 2, states
    assert weights["classes"] == [0, 1]  # the declaration's, not the data's
    assert "no declared bounds" in text  # the failures still say why


def test_one_budget_per_dataset_rebuilt_from_the_chain(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    ledger = embedded_ledger
    alice, bob, carol = identity(BUYER), identity(OTHER), identity(dev_account(6))
    dataset, order_a = compute_dataset(ledger, OWNER, alice)
    order_b = order_for(ledger, OWNER, dataset, bob)
    order_c = order_for(ledger, OWNER, dataset, carol)
    trust(ledger, OWNER, dataset, QUERY)
    path = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    spec = ComputeDataset(path, differential_privacy=True, epsilon_budget=1.0, consumer_budget=0.6)
    lock = threading.RLock()

    def node(data_dir: Path) -> Any:
        return running(
            ledger=ledger,
            operator=identity(OWNER),
            datasets={dataset: spec},
            data_dir=data_dir,
            chain_lock=lock,
        )

    with node(tmp_path / "node") as live:
        a = live.client(alice, ledger.chain.chain_id)
        b = live.client(bob, ledger.chain.chain_id)
        first = a.submit(dataset, order_a, QUERY, query_params(0.5))
        # Alice's cap is 0.6 of the dataset's 1.0: 0.2 more is refused.
        with pytest.raises(BudgetExceeded, match=r"0\.1 left of the per-consumer cap"):
            a.submit(dataset, order_a, QUERY, query_params(0.2))
        second = b.submit(dataset, order_b, QUERY, query_params(0.5))
        assert a.wait(first, 120)["state"] == "succeeded"
        assert b.wait(second, 120)["state"] == "succeeded"
        # The dataset's budget is spent: Bob's fresh address has nothing left either.
        with pytest.raises(BudgetExceeded, match=r"dataset \d+ has 0 left of 1"):
            b.submit(dataset, order_b, QUERY, query_params(0.1))
        assert b.budget(dataset)["remaining"] == 0.0
        a.close()
        b.close()
    # The node loses budget.db; then a new node starts with no state at all.
    (tmp_path / "node" / "budget.db").unlink()
    for extra in ("budget.db-wal", "budget.db-shm"):
        (tmp_path / "node" / extra).unlink(missing_ok=True)
    for data_dir in (tmp_path / "node", tmp_path / "fresh"):
        with node(data_dir) as live, live.client(carol, ledger.chain.chain_id) as c:
            assert c.budget(dataset)["spent"] == pytest.approx(1.0)
            with pytest.raises(BudgetExceeded, match="has 0 left of 1"):
                c.submit(dataset, order_c, QUERY, query_params(0.1))
    shutil.rmtree(tmp_path / "fresh")
