"""Two consumers race a DP federated round over the same two datasets, whose budgets
each fit one round: no epsilon may be spent on a model that is never averaged.

The race is forced: each consumer's first site admits its job before either asks its
second site (alice goes A then B, bob B then A). Without reservation across sites,
alice's job on A and bob's on B both ran, both second sites refused, and both
datasets spent their whole budget on two discarded half-rounds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from compute_helpers import (
    SERVICE,
    Node,
    breast_cancer,
    compute_dataset,
    documented_bounds,
    identity,
    running,
    write_csv,
)

from datagora.compute import BudgetExceeded, ComputeClient, JobRefused, Site, federated_train
from datagora.compute.federated import FEDAVG_DP_ALGORITHM, FederatedModel
from datagora.compute.jobs import ComputeDataset, algorithm_hash
from datagora.crypto.keys import Identity
from datagora.ledger import JobStatus, Ledger, dev_account
from helpers import BUYER, OTHER, OWNER

FEATURES = ["worst_radius", "worst_texture", "worst_area"]
EPSILON = 1.0
BUDGET = 1.0  # one round per dataset


class _Lockstep(ComputeClient):
    """A consumer's client (one per node); the consumer's first submission, on any of
    its nodes (``count`` is shared by them), waits for the other consumer's."""

    def __init__(
        self, *args: Any, barrier: threading.Barrier, count: list[int], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.barrier = barrier
        self.count = count

    def submit(self, *args: Any, **kwargs: Any) -> int:
        job = super().submit(*args, **kwargs)
        self.count[0] += 1
        if self.count[0] == 1:
            self.barrier.wait(timeout=60)
        return job


def _order(ledger: Ledger, owner: Any, dataset: int, consumer: Identity) -> str:
    token = ledger.datatoken(dataset)
    token.mint(owner, consumer.address, 5)
    return str(token.order(consumer.account, SERVICE, consumer.umbral_public_key).tx.tx_hash)


@pytest.fixture
def two_sites(embedded_ledger: Ledger, tmp_path: Path) -> Iterator[tuple[Ledger, list[Any]]]:
    ledger = embedded_ledger
    alice, bob = identity(BUYER), identity(dev_account(6))
    frame = breast_cancer()
    lock = threading.RLock()
    with ExitStack() as stack:
        sites = []
        for k, owner in enumerate((OWNER, OTHER)):
            dataset, alice_order = compute_dataset(ledger, owner, alice)
            bob_order = _order(ledger, owner, dataset, bob)
            ledger.compute.set_trusted(
                owner, dataset, algorithm_hash(FEDAVG_DP_ALGORITHM.encode()), True
            )
            spec = ComputeDataset(
                write_csv(frame.iloc[k::2], tmp_path / f"hospital{k}" / "records.csv"),
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
            sites.append((node, dataset, {alice.address: alice_order, bob.address: bob_order}))
        yield ledger, [alice, bob, *sites]


def _train(sites: list[Site]) -> FederatedModel:
    bounds = documented_bounds()
    dp = {"epsilon": EPSILON, "bounds": {f: bounds[f] for f in FEATURES}}
    return federated_train(sites, FEATURES, "target", dp=dp)


def test_racing_dp_rounds_spend_no_epsilon_on_discarded_models(
    two_sites: tuple[Ledger, list[Any]],
) -> None:
    ledger, (alice, bob, *sites) = two_sites
    chain_id = ledger.chain.chain_id
    barrier = threading.Barrier(2)
    outcome: dict[str, FederatedModel | Exception] = {}

    def site_list(who: Identity, nodes: list[tuple[Node, int, dict[str, str]]]) -> list[Site]:
        out, count = [], [0]
        for node, dataset, orders in nodes:
            client = _Lockstep(
                node.url, who, chain_id, node.jobs.verifying_contract, barrier=barrier, count=count
            )
            out.append(Site(client, dataset, orders[who.address]))
        return out

    alice_sites = site_list(alice, sites)
    bob_sites = site_list(bob, sites[::-1])

    def run(name: str, own: list[Site]) -> None:
        try:
            outcome[name] = _train(own)
        except Exception as exc:  # the refusal is the outcome under test
            outcome[name] = exc

    threads = [
        threading.Thread(target=run, args=("alice", alice_sites)),
        threading.Thread(target=run, args=("bob", bob_sites)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for node, _, _ in sites:
        node.jobs.wait_idle(120)

    models = [m for m in outcome.values() if isinstance(m, FederatedModel)]
    refused = [e for e in outcome.values() if not isinstance(e, FederatedModel)]
    assert len(models) + len(refused) == 2
    assert all(isinstance(e, BudgetExceeded) for e in refused), refused
    assert len(models) <= 1  # the budgets fit one round
    averaged = {job for m in models for job in m.jobs}
    completed = [e for e in ledger.events() if e.name == "JobCompleted"]
    # Every job that spent epsilon belongs to a model that was averaged.
    spent_on = {int(e["job"]) for e in completed if int(e["epsilon_milli"]) > 0}
    assert spent_on <= averaged, (spent_on, averaged, outcome)
    for node, dataset, _ in sites:
        budget = node.jobs.budget(dataset, alice.address)
        assert budget["spent"] == pytest.approx(EPSILON * len(models))
        assert budget["reserved"] == pytest.approx(0.0)  # every hold was released
    recorded = {int(e["job"]) for e in ledger.events() if e.name == "JobRecorded"}
    for job in recorded - averaged:
        assert ledger.compute.job(job).status == JobStatus.CANCELLED

    # What the race released can be used: with no model yet, a round now fits.
    if not models:
        model = _train(alice_sites)  # its lockstep is spent: the barrier is not met again
        assert set(model.epsilon) == {d for _, d, _ in sites}


def test_a_held_job_reserves_and_its_hold_ends_if_never_started(
    two_sites: tuple[Ledger, list[Any]],
) -> None:
    ledger, (alice, _bob, *sites) = two_sites
    node, dataset, orders = sites[0]
    bounds = documented_bounds()
    params = {
        "features": FEATURES,
        "target": "target",
        "dp": {"epsilon": EPSILON, "bounds": {f: bounds[f] for f in FEATURES}},
    }
    with node.client(alice, ledger.chain.chain_id) as client:
        # Code the owner has not trusted waits for review: it cannot be held.
        with pytest.raises(JobRefused, match="cannot be held") as refused:
            client.submit(dataset, orders[alice.address], "def run(i, p, o):\n    pass\n",
                          params, hold=30)  # fmt: skip
        assert refused.value.status == 409
        job = client.submit(dataset, orders[alice.address], FEDAVG_DP_ALGORITHM, params, hold=1)
        assert client.status(job)["state"] == "held"
        assert client.budget(dataset)["reserved"] == pytest.approx(EPSILON)
        # Another round cannot take the reserved epsilon meanwhile.
        with pytest.raises(BudgetExceeded):
            client.submit(dataset, orders[alice.address], FEDAVG_DP_ALGORITHM, params, hold=1)
        info = client.wait(job, timeout=10, until=("cancelled",))
        assert "did not start it in time" in info["reason"]
        with pytest.raises(JobRefused, match="not held"):
            client.start(job)
        assert ledger.compute.job(job).status == JobStatus.CANCELLED
        budget = client.budget(dataset)
        assert (budget["reserved"], budget["spent"]) == (0.0, 0.0)
        # Held and started, it runs and spends.
        job = client.submit(dataset, orders[alice.address], FEDAVG_DP_ALGORITHM, params, hold=60)
        assert client.start(job)["state"] in ("queued", "running", "succeeded")
        assert client.wait(job, timeout=120)["state"] == "succeeded"
        assert client.budget(dataset)["spent"] == pytest.approx(EPSILON)
