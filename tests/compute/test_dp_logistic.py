"""DP logistic regression through the job's privacy session, on the breast cancer data."""

from __future__ import annotations

import io
import json
import math
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from compute_helpers import breast_cancer, compute_dataset, identity, running, write_csv
from sklearn.model_selection import train_test_split

from datagora.compute import BudgetExceeded, JobRefused
from datagora.compute.dp import (
    BudgetStore,
    EpsilonExceeded,
    PrivacySession,
    check_dp_params,
    to_unit_box,
)
from datagora.compute.jobs import ComputeDataset
from datagora.ledger import Ledger
from helpers import BUYER, OWNER

COLUMNS = [
    "worst_radius",
    "worst_texture",
    "worst_concave_points",
    "worst_area",
    "worst_smoothness",
]


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = breast_cancer()
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    return train, test


def declared_bounds(frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """What an owner publishes: a generous range per column, fixed before any job."""
    return {c: (0.0, float(frame[c].max()) * 1.5) for c in COLUMNS}


def test_trains_on_breast_cancer_and_reports_epsilon(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = split
    session = PrivacySession(5.0, declared_bounds(train))
    model = session.logistic_regression(5.0, COLUMNS, random_state=0)
    assert session.spent == 0.0  # nothing is spent before the data is touched
    model.fit(train, train["target"])
    accuracy = float(model.score(test, test["target"]))
    majority = float(max(test["target"].mean(), 1 - test["target"].mean()))
    print(f"DP logistic regression: epsilon {session.spent:g}, held-out accuracy {accuracy:.4f}")
    print(f"(majority-class baseline {majority:.4f})")
    assert session.spent == pytest.approx(5.0)
    assert accuracy >= 0.85 and accuracy > majority + 0.15
    # The explicit bound reached diffprivlib, not one computed from the rows.
    assert model[-1].data_norm == pytest.approx(math.sqrt(len(COLUMNS)))
    # The model travels as a result file and predicts on raw columns after loading.
    loaded = pickle.loads(pickle.dumps(model))
    assert loaded.score(test[COLUMNS].to_numpy(), test["target"]) == pytest.approx(accuracy)


def test_noise_depends_on_the_draw(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = split
    coefs = []
    for seed in (1, 2):
        session = PrivacySession(1.0, declared_bounds(train))
        model = session.logistic_regression(1.0, COLUMNS, random_state=seed)
        coefs.append(model.fit(train, train["target"])[-1].coef_)
    assert not np.allclose(coefs[0], coefs[1])


def test_rows_are_bounded_by_the_declaration_whatever_the_data() -> None:
    rng = np.random.default_rng(0)
    lower, upper = np.array([0.0, -5.0, 10.0]), np.array([1.0, 5.0, 20.0])
    rows = rng.normal(0, 1000, size=(500, 3))  # mostly far outside the bounds
    boxed = to_unit_box(rows, ["a", "b", "c"], lower, upper)
    assert np.abs(boxed).max() <= 1.0
    assert np.linalg.norm(boxed, axis=1).max() <= math.sqrt(3) + 1e-12
    with pytest.raises(ValueError, match="expected 3 columns"):
        to_unit_box(rows[:, :2], ["a", "b", "c"], lower, upper)


def test_missing_bounds_refused(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = split
    bounds = declared_bounds(train)
    del bounds["worst_area"]
    session = PrivacySession(1.0, bounds)
    with pytest.raises(EpsilonExceeded, match=r"no declared bounds for columns \['worst_area'\]"):
        session.logistic_regression(0.5, COLUMNS)
    assert session.spent == 0.0
    # At the node, a job on a DP dataset that declares no bounds never gets that far.
    with pytest.raises(JobRefused, match="never inferred from the data"):
        check_dp_params({"dp": {"epsilon": 0.5}})


def test_session_refuses_more_than_declared(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = split
    session = PrivacySession(1.0, declared_bounds(train))
    with pytest.raises(EpsilonExceeded, match=r"asked for epsilon 1\.5"):
        session.logistic_regression(1.5, COLUMNS)
    session.logistic_regression(0.6, COLUMNS, random_state=0).fit(train, train["target"])
    assert session.spent == pytest.approx(0.6)
    with pytest.raises(EpsilonExceeded, match=r"0\.4 of the declared 1 is left"):
        session.logistic_regression(0.6, COLUMNS)


def test_a_job_cannot_choose_the_noise_seed(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = split
    session = PrivacySession(1.0, declared_bounds(train), allow_seed=False)  # as in a job
    with pytest.raises(EpsilonExceeded, match="random_state is refused in a job"):
        session.logistic_regression(1.0, COLUMNS, random_state=0)
    assert session.spent == 0.0
    session.logistic_regression(1.0, COLUMNS).fit(train, train["target"])
    assert session.spent == pytest.approx(1.0)


def test_budget_refuses_a_job_over_budget(tmp_path: Path) -> None:
    store = BudgetStore(tmp_path / "budget.db")
    try:
        consumer = "0xAbC0000000000000000000000000000000000001"
        store.reserve(1, 7, consumer, 0.6, total=1.0)
        store.spend(1)
        with pytest.raises(BudgetExceeded, match=r"0\.4 left"):
            store.check(7, consumer, 0.6, total=1.0)
        with pytest.raises(BudgetExceeded, match=r"0\.4 left"):
            store.reserve(2, 7, consumer, 0.6, total=1.0)
        store.reserve(3, 7, consumer, 0.4, total=1.0)  # exactly what is left fits
        budget = store.budget(7, consumer, 1.0)
        assert (budget.spent, budget.reserved, budget.remaining) == pytest.approx((0.6, 0.4, 0.0))
        # Budgets are per dataset: another dataset is untouched.
        assert store.budget(8, consumer, 1.0).remaining == pytest.approx(1.0)
    finally:
        store.close()


DP_LOGISTIC = """
import json
from datagora.compute import dp

def run(inputs, params, output_dir):
    frame = next(iter(inputs.values())).frame
    session = dp.session()
    columns = params["columns"]
    model = session.logistic_regression(params["dp"]["epsilon"], columns)
    model.fit(frame, frame["target"])
    step = model[-1]
    (output_dir / "model.json").write_text(json.dumps({
        "coef": step.coef_[0].tolist(), "intercept": float(step.intercept_[0]),
        "epsilon": session.spent}))
"""


def test_dp_job_on_the_node_trains_and_reports_epsilon(
    embedded_ledger: Ledger, tmp_path: Path, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """The issue's real check: DP required by the owner, the job still trains, and the
    epsilon is reported to the consumer, charged to the budget and written on chain."""
    ledger = embedded_ledger
    buyer = identity(BUYER)
    train, test = split
    dataset, order = compute_dataset(ledger, OWNER, buyer)
    # Not trusted by hash (refused on a DP dataset: it is not one of the node's DP
    # algorithms): the owner reviews and approves it.
    spec = ComputeDataset(
        write_csv(train, tmp_path / "owner" / "cancer.csv"),
        differential_privacy=True,
        epsilon_budget=6.0,
    )
    bounds = {c: list(b) for c, b in declared_bounds(train).items()}
    params = {"dp": {"epsilon": 5.0, "bounds": bounds}, "columns": COLUMNS}
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
        job = client.submit(dataset, order, DP_LOGISTIC, params)
        node.jobs.approve(job)
        info = client.wait(job)
        assert info["state"] == "succeeded", info
        with tarfile.open(fileobj=io.BytesIO(client.result(job))) as tar:
            result = json.loads(tar.extractfile("model.json").read())  # type: ignore[union-attr]
        with pytest.raises(BudgetExceeded, match=r"1 left"):
            client.submit(dataset, order, DP_LOGISTIC, params)
        budget = client.budget(dataset)
    lower = [b[0] for b in bounds.values()]
    upper = [b[1] for b in bounds.values()]
    scores = to_unit_box(test, COLUMNS, lower, upper) @ np.array(result["coef"])
    accuracy = float(((scores + result["intercept"] > 0) == test["target"]).mean())
    print(f"DP job on the node: epsilon {result['epsilon']:g}, held-out accuracy {accuracy:.4f}")
    assert result["epsilon"] == pytest.approx(5.0)
    assert accuracy >= 0.8  # fresh noise in a job: over 100 draws offline, min 0.88
    assert budget["spent"] == pytest.approx(5.0) and budget["remaining"] == pytest.approx(1.0)
    completed = {e["job"]: e["epsilon_milli"] for e in ledger.events() if e.name == "JobCompleted"}
    assert completed[job] == 5000
