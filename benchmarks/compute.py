"""`datagora bench compute`: what the sandbox and the job pipeline cost, and FedAvg vs central.

- ``sandbox`` (``"bubblewrap"``, or ``"weak"`` where bwrap is missing and the weak mode
  was allowed) and ``sandbox_cgroups`` (the cgroup v1 controllers used, or why none);
- ``sandbox_noop_s_p50`` / ``bare_python_s_p50`` / ``sandbox_overhead_ratio``: a no-op
  algorithm through :class:`Sandbox` (private dir, bwrap, seccomp, tmpfs, runner,
  output copy, cleanup) against a bare ``python -c pass`` subprocess, both measured here
  and now;
- ``job_overhead_s_p50``: submit-to-decrypted-result through a real compute node on
  loopback (embedded chain: record + complete transactions), minus the same
  algorithm run directly on the same data in this process;
- ``jobs_per_min``: 8 small jobs submitted at once to one node with 2 workers;
- ``federated_accuracy`` / ``central_accuracy``: FedAvg over three nodes ("hospitals")
  on scikit-learn's breast cancer data vs a logistic regression on the pooled data,
  same held-out split (25 %, seed 0);
- ``dp_query_s_p50``: submit-to-decrypted-result of the node's OpenDP ``dp-query``
  (count, sum, mean at epsilon 1) on a dataset that requires DP;
- ``dp_accuracy``: held-out accuracy of the DP logistic regression that
  ``fedavg-logistic-dp`` trains (diffprivlib objective perturbation, five features
  clipped to bounds documented for the data, not read from it) at epsilon 1 and 5,
  the median of 21 draws each, against ``non_private`` (scikit-learn's logistic
  regression on the same clipped features), same split as above.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from datagora.compute import FEDAVG_ALGORITHM, ComputeClient, Sandbox, Site, create_compute_app
from datagora.compute.jobs import algorithm_hash
from datagora.crypto.keys import Identity
from datagora.ledger import Ledger, Pricing, PublishParams, dev_account
from datagora.ports import free_port

NOOP = "def run(inputs, params, output_dir):\n    (output_dir / 'ok').write_text('1')\n"
_H = b"\x11" * 32


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def _dataset(ledger: Ledger, owner: Any, consumer: Identity) -> tuple[int, str]:
    pub = ledger.factory.publish(
        owner,
        PublishParams(
            metadata_hash=_H,
            metadata_uri="https://example.org/m.json",
            manifest_hash=_H,
            merkle_root=_H,
            pricing=Pricing.NONE,
            price=0,
            market_fee_bps=0,
            market_fee_recipient=dev_account(3).address,
            dispenser_max_per_address=0,
        ),
    )
    token = ledger.datatoken(pub.dataset)
    token.set_service(owner, 1, 3600)
    token.mint(owner, consumer.address, 10)
    return pub.dataset, token.order(consumer.account, 1, consumer.umbral_public_key).tx.tx_hash


class _Node:
    def __init__(self, **kwargs: Any) -> None:
        self.app = create_compute_app(**kwargs)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def run(samples: int = 7) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sandbox = Sandbox()
    bare, boxed = [], []
    for _ in range(samples):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        with sandbox.run(NOOP.encode(), {}, {}) as result:
            assert result.ok, result.reason
        boxed.append(time.perf_counter() - t)
    out["isolation"] = sandbox.isolation.value
    out["sandbox"] = sandbox.isolation.value
    out["sandbox_cgroups"] = sandbox.cgroups
    out["bare_python_s_p50"] = round(_p50(bare), 4)
    out["sandbox_noop_s_p50"] = round(_p50(boxed), 4)
    out["sandbox_overhead_ratio"] = round(_p50(boxed) / _p50(bare), 2)

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    features = [c for c in frame.columns if c != "target"]
    ledger = Ledger.embedded()
    buyer = Identity.from_private_key(bytes(dev_account(2).key))
    lock = threading.RLock()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        owner = dev_account(1)
        dataset, order = _dataset(ledger, owner, buyer)
        path = base / "data" / "cancer.csv"
        path.parent.mkdir()
        frame.to_csv(path, index=False)
        ledger.compute.set_trusted(owner, dataset, algorithm_hash(NOOP.encode()), True)
        node = _Node(
            ledger=ledger,
            operator=Identity.from_private_key(bytes(owner.key)),
            datasets={dataset: path},
            data_dir=base / "node",
            workers=2,
            chain_lock=lock,
        )
        try:
            with ComputeClient(
                f"http://127.0.0.1:{node.port}",
                buyer,
                ledger.chain.chain_id,
                ledger.compute.address,
            ) as c:
                overheads = []
                for _ in range(samples):
                    t = time.perf_counter()
                    job = c.submit(dataset, order, NOOP, {"t": time.time()})
                    assert c.wait(job)["state"] == "succeeded"
                    c.result(job)
                    total = time.perf_counter() - t
                    t = time.perf_counter()
                    namespace: dict[str, Any] = {}
                    exec(compile(NOOP, "noop", "exec"), namespace)  # the algorithm, directly
                    with tempfile.TemporaryDirectory() as direct:
                        namespace["run"]({dataset: path}, {}, Path(direct))
                    overheads.append(total - (time.perf_counter() - t))
                out["job_overhead_s_p50"] = round(_p50(overheads), 3)
                t = time.perf_counter()
                jobs = [c.submit(dataset, order, NOOP, {"k": k}) for k in range(8)]
                for job in jobs:
                    assert c.wait(job, 300)["state"] == "succeeded"
                out["jobs_per_min"] = round(8 / (time.perf_counter() - t) * 60, 1)
        finally:
            node.stop()

        train, test = train_test_split(
            frame, test_size=0.25, random_state=0, stratify=frame["target"]
        )
        shuffled = train.sample(frac=1.0, random_state=0)
        nodes, sites = [], []
        try:
            for k, owner in enumerate([dev_account(1), dev_account(4), dev_account(5)]):
                dataset, order = _dataset(ledger, owner, buyer)
                ledger.compute.set_trusted(
                    owner, dataset, algorithm_hash(FEDAVG_ALGORITHM.encode()), True
                )
                part = base / f"hospital{k}" / "records.csv"
                part.parent.mkdir()
                shuffled.iloc[k::3].to_csv(part, index=False)
                node = _Node(
                    ledger=ledger,
                    operator=Identity.from_private_key(bytes(owner.key)),
                    datasets={dataset: part},
                    data_dir=base / f"node{k}",
                    chain_lock=lock,
                )
                nodes.append(node)
                client = ComputeClient(
                    f"http://127.0.0.1:{node.port}",
                    buyer,
                    ledger.chain.chain_id,
                    ledger.compute.address,
                )
                sites.append(Site(client, dataset, order))
            t = time.perf_counter()
            model = federated_train_safe(sites, features)
            out["federated_s"] = round(time.perf_counter() - t, 2)
        finally:
            for node in nodes:
                node.stop()
        scaler = StandardScaler().fit(train[features])
        central = LogisticRegression(max_iter=5000).fit(
            scaler.transform(train[features]), train["target"]
        )
        out["central_accuracy"] = round(
            float(central.score(scaler.transform(test[features]), test["target"])), 4
        )
        out["federated_accuracy"] = round(
            model.score(test[features].to_numpy(), test["target"].to_numpy()), 4
        )
        out["federated_rounds"] = 3
        out["dp_query_s_p50"] = _dp_query_p50(ledger, buyer, frame, base, lock, samples)
    out["dp_accuracy"] = _dp_accuracy(frame)
    return out


DP_FEATURES = [
    "worst_radius",
    "worst_texture",
    "worst_concave_points",
    "worst_area",
    "worst_smoothness",
]
DP_BOUNDS = {  # 1.5 x the maxima scikit-learn documents for the data (its DESCR)
    "worst_radius": [0.0, 54.06],
    "worst_texture": [0.0, 74.31],
    "worst_concave_points": [0.0, 0.4365],
    "worst_area": [0.0, 6381.0],
    "worst_smoothness": [0.0, 0.3345],
    "mean_radius": [0.0, 42.165],
}


def _dp_query_p50(
    ledger: Ledger, buyer: Identity, frame: Any, base: Path, lock: Any, samples: int
) -> float:
    from datagora.compute.algorithms import source
    from datagora.compute.jobs import ComputeDataset

    query = source("dp-query")
    owner = dev_account(6)
    dataset, order = _dataset(ledger, owner, buyer)
    ledger.compute.set_trusted(owner, dataset, algorithm_hash(query.encode()), True)
    path = base / "dp" / "cancer.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    spec = ComputeDataset(path, differential_privacy=True, epsilon_budget=1000.0)
    node = _Node(
        ledger=ledger,
        operator=Identity.from_private_key(bytes(owner.key)),
        datasets={dataset: spec},
        data_dir=base / "dp-node",
        chain_lock=lock,
    )
    params = {
        "dp": {"epsilon": 1.0, "bounds": DP_BOUNDS},
        "queries": [
            {"op": "count"},
            {"op": "sum", "column": "mean_radius"},
            {"op": "mean", "column": "worst_area"},
        ],
    }
    times = []
    try:
        with ComputeClient(
            f"http://127.0.0.1:{node.port}", buyer, ledger.chain.chain_id, ledger.compute.address
        ) as c:
            for _ in range(samples):
                t = time.perf_counter()
                job = c.submit(dataset, order, query, params)
                assert c.wait(job, 300)["state"] == "succeeded"
                c.result(job)
                times.append(time.perf_counter() - t)
    finally:
        node.stop()
    return round(_p50(times), 3)


def _dp_accuracy(frame: Any, draws: int = 21) -> dict[str, float]:
    import warnings

    from datagora.compute.dp import PrivacySession, to_unit_box

    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    features = DP_FEATURES
    bounds = {f: (DP_BOUNDS[f][0], DP_BOUNDS[f][1]) for f in features}
    lower = [bounds[f][0] for f in features]
    upper = [bounds[f][1] for f in features]
    plain = LogisticRegression(max_iter=5000).fit(
        to_unit_box(train, features, lower, upper), train["target"]
    )
    out = {
        "non_private": round(
            float(plain.score(to_unit_box(test, features, lower, upper), test["target"])), 4
        )
    }
    for epsilon in (1.0, 5.0):
        scores = []
        for _ in range(draws):
            session = PrivacySession(epsilon, bounds)
            model = session.logistic_regression(epsilon, features)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(train[features], train["target"].to_numpy())
            scores.append(float(model.score(test[features], test["target"].to_numpy())))
        out[f"epsilon_{epsilon:g}"] = round(_p50(scores), 4)
    return out


def federated_train_safe(sites: list[Site], features: list[str]) -> Any:
    from datagora.compute import federated_train

    return federated_train(sites, features, "target", rounds=3)


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
