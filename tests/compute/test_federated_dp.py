"""Federated training under differential privacy: three hospitals, each owner requiring
DP with a per-consumer epsilon budget, three compute nodes, real DP jobs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from compute_helpers import (
    Node,
    breast_cancer,
    compute_dataset,
    documented_bounds,
    identity,
    running,
    write_csv,
)
from sklearn.model_selection import train_test_split

from datagora.compute import BudgetExceeded, ComputeError, JobRefused, Site, federated_train
from datagora.compute.federated import FEDAVG_ALGORITHM, FEDAVG_DP_ALGORITHM
from datagora.compute.jobs import ComputeDataset, algorithm_hash
from datagora.ledger import JobStatus, Ledger, dev_account
from helpers import BUYER, OTHER, OWNER

OWNERS = [OWNER, OTHER, dev_account(5)]
FEATURES = [
    "worst_radius",
    "worst_texture",
    "worst_concave_points",
    "worst_area",
    "worst_smoothness",
]
EPSILON = 8.0  # per site: generous, so that the test's accuracy bar holds for any draw
BUDGET = 10.0


@dataclass
class Hospitals:
    ledger: Ledger
    nodes: list[Node]
    sites: list[Site]
    test: pd.DataFrame


@pytest.fixture
def hospitals(embedded_ledger: Ledger, tmp_path: Path) -> Iterator[Hospitals]:
    ledger = embedded_ledger
    buyer = identity(BUYER)
    frame = breast_cancer()
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    shuffled = train.sample(frac=1.0, random_state=0)
    lock = threading.RLock()
    with ExitStack() as stack:
        nodes, sites = [], []
        for k, owner in enumerate(OWNERS):
            dataset, order = compute_dataset(ledger, owner, buyer)
            trusted = algorithm_hash(FEDAVG_DP_ALGORITHM.encode())
            ledger.compute.set_trusted(owner, dataset, trusted, True)
            spec = ComputeDataset(
                write_csv(shuffled.iloc[k::3], tmp_path / f"hospital{k}" / "records.csv"),
                differential_privacy=True,
                epsilon_budget=BUDGET,
            )
            node = stack.enter_context(
                running(
                    ledger=ledger,
                    operator=identity(owner),
                    datasets={dataset: spec},
                    data_dir=tmp_path / f"node{k}",
                    chain_lock=lock,
                )
            )
            client = stack.enter_context(node.client(buyer, ledger.chain.chain_id))
            nodes.append(node)
            sites.append(Site(client, dataset, order))
        yield Hospitals(ledger, nodes, sites, test)


def dp(epsilon: float = EPSILON) -> dict[str, object]:
    bounds = documented_bounds()
    return {"epsilon": epsilon, "bounds": {f: bounds[f] for f in FEATURES}}


def test_dp_federated_trains_spends_and_refuses_over_budget(hospitals: Hospitals) -> None:
    ledger, sites, test = hospitals.ledger, hospitals.sites, hospitals.test
    datasets = [s.dataset for s in sites]
    model = federated_train(sites, FEATURES, "target", dp=dp())
    accuracy = model.score(test[FEATURES].to_numpy(), test["target"].to_numpy())
    majority = float(max(test["target"].mean(), 1 - test["target"].mean()))
    print(
        f"DP federated (3 sites, epsilon {EPSILON:g} each): held-out accuracy {accuracy:.4f}, "
        f"majority baseline {majority:.4f}; epsilon per dataset {model.epsilon}"
    )
    assert accuracy >= 0.85 and accuracy > majority + 0.15
    # One job per site, no statistics round; each site spent exactly its epsilon.
    assert len(model.jobs) == 3
    assert model.epsilon == {d: pytest.approx(EPSILON) for d in datasets}
    doc = model.to_json()
    assert doc["format"] == "datagora.fedavg-logistic-dp.v1"
    assert doc["epsilon"] == {str(d): pytest.approx(EPSILON) for d in datasets}
    for site in sites:
        budget = site.client.budget(site.dataset)
        assert budget["spent"] == pytest.approx(EPSILON)
        assert budget["remaining"] == pytest.approx(BUDGET - EPSILON)
    completed = {e["job"]: e for e in ledger.events() if e.name == "JobCompleted"}
    for job in model.jobs:
        assert ledger.compute.job(job).status == JobStatus.SUCCEEDED
        assert completed[job]["epsilon_milli"] == round(EPSILON * 1000)

    # A second training does not fit in any site's budget: refused before any job runs.
    jobs_before = len(completed)
    with pytest.raises(BudgetExceeded, match=r"has 2 left of 10 .*no job was submitted"):
        federated_train(sites, FEATURES, "target", dp=dp())
    # And the node itself refuses the job (the coordinator's check is a courtesy).
    with pytest.raises(BudgetExceeded, match=r"2 left"):
        sites[0].client.submit(
            sites[0].dataset,
            sites[0].order,
            FEDAVG_DP_ALGORITHM,
            {"features": FEATURES, "target": "target", "dp": dp()},
        )
    assert len([e for e in ledger.events() if e.name == "JobCompleted"]) == jobs_before
    for site in sites:
        assert site.client.budget(site.dataset)["spent"] == pytest.approx(EPSILON)


def test_dp_federated_refusals(hospitals: Hospitals) -> None:
    sites = hospitals.sites
    # The plain FedAvg protocol (exact statistics, raw rows) is refused by DP datasets.
    with pytest.raises(JobRefused, match="requires differential privacy"):
        federated_train(sites, FEATURES, "target", rounds=1)
    with pytest.raises(ComputeError, match="under DP use fedavg-logistic-dp"):
        federated_train(sites, FEATURES, "target", dp=dp(), algorithm=FEDAVG_ALGORITHM)
    with pytest.raises(ComputeError, match="runs one round, not 3"):
        federated_train(sites, FEATURES, "target", dp=dp(), rounds=3)
    partial = dp()
    del partial["bounds"]["worst_area"]  # type: ignore[attr-defined]
    with pytest.raises(ComputeError, match=r"no declared bounds for features \['worst_area'\]"):
        federated_train(sites, FEATURES, "target", dp=partial)
    with pytest.raises(BudgetExceeded, match="no job was submitted"):
        federated_train(sites, FEATURES, "target", dp=dp(BUDGET + 1))
    for site in sites:
        assert site.client.budget(site.dataset)["spent"] == 0.0
    # The node says, before any order, what it serves and whether DP is required.
    served = sites[0].client.dataset(sites[0].dataset)
    assert served["differential_privacy"] is True and served["epsilon_budget"] == BUDGET
    with pytest.raises(JobRefused, match="does not compute on dataset 9999") as refused:
        sites[0].client.dataset(9999)
    assert refused.value.status == 404
    response = httpx.get(f"{hospitals.nodes[1].url}/datasets/{sites[0].dataset}")
    assert response.status_code == 404 and "does not compute" in response.json()["detail"]
