"""The owner's side of DP on a whole embedded network: `offer_compute(...,
dp=True)` refuses to trust code that is not one of the nodes' DP
algorithms, and a dataset is published with its DP mock (`publish(..., mock=...)`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from compute_helpers import breast_cancer

import datagora as dg
from datagora.compute.algorithms import source
from datagora.compute.jobs import algorithm_hash
from datagora.compute.mock import make_mock
from datagora.errors import ConfigError

pytestmark = pytest.mark.slow


def test_dp_offer_trusts_only_dp_algorithms_and_dp_query_runs(tmp_path: Path) -> None:
    frame = breast_cancer()[["mean_radius", "worst_area", "target"]]
    path = tmp_path / "cohort.csv"
    frame.to_csv(path, index=False)
    meta = {"title": "DP cohort", "license": "CC-BY-4.0", "creator": "hospital"}
    fedavg = algorithm_hash(source("fedavg-logistic").encode())
    with dg.connect(embedded=True) as owner:
        mock = make_mock(frame, rows=50, schema={"worst_area": {"bounds": [0, 6000]}})
        mock_csv = mock.to_csv(index=False).encode()
        dataset = owner.publish(path, meta, price=10**18, mock=mock_csv).dataset
        assert owner.account(2).mock(dataset) == mock_csv  # public, checked against its hash
        before = owner.metadata(dataset)
        with pytest.raises(ConfigError, match="fedavg-logistic is not one of the compute nodes"):
            owner.offer_compute(dataset, ["fedavg-logistic"], dp=True)
        assert owner.metadata(dataset) == before  # nothing changed
        assert not owner.ledger.compute.is_trusted(dataset, fedavg)
        # Trusted without DP first, then DP asked: refused until it is untrusted.
        owner.offer_compute(dataset, ["fedavg-logistic"])
        with pytest.raises(ConfigError, match="untrust"):
            owner.offer_compute(dataset, ["dp-query"], dp=True)
        offered = owner.offer_compute(dataset, ["dp-query"], dp=True, untrusted=["fedavg-logistic"])
        assert offered["differential_privacy"] is True and offered["untrusted"] == [fedavg.hex()]
        assert not owner.ledger.compute.is_trusted(dataset, fedavg)
        researcher = owner.account(2)
        params = {
            "dp": {"epsilon": 1.0, "bounds": {"worst_area": [0, 6000]}},
            "queries": [{"op": "count"}, {"op": "mean", "column": "worst_area"}],
        }
        job = researcher.dataset(dataset).compute("dp-query", params)
        assert job.wait(120)["state"] == "succeeded"
        (result,) = job.files(tmp_path / "result")
        doc = json.loads(result.read_text())
        assert [r["op"] for r in doc["results"]] == ["count", "mean"]
        assert abs(doc["results"][0]["value"] - len(frame)) < 60
