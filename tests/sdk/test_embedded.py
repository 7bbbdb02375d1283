"""dg.connect(embedded=True): a whole network in this process, used as a notebook would."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

import datagora as dg
from datagora.compute import sandbox as sandbox_module
from datagora.compute.errors import SandboxUnavailable
from datagora.crypto.keys import Identity
from datagora.errors import ConfigError
from datagora.ledger import Pricing

pytestmark = pytest.mark.slow
TOKEN = 10**18
COUNT = """
import json

def run(inputs, params, output_dir):
    (item,) = inputs.values()
    (output_dir / "count.json").write_text(json.dumps({"rows": len(item.frame)}))
"""


def _frame() -> pd.DataFrame:
    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame.iloc[:200]


def test_publish_search_buy_read_compute_then_close(tmp_path: Path) -> None:
    frame = _frame()
    source = tmp_path / "cohort.csv"
    frame.to_csv(source, index=False)
    meta = {
        "title": "Embedded cohort",
        "description": "breast cancer rows for a notebook",
        "license": "CC-BY-4.0",
        "creator": "hospital one",
        "tags": ["medical"],
        "columns": [{"name": c, "type": "float"} for c in frame.columns],
        "services": [{"id": 0, "type": "download", "price": str(TOKEN)}],
    }
    with dg.connect(embedded=True) as owner:
        researcher = owner.account(2)
        assert researcher.network is owner.network
        assert owner.identity.address != researcher.identity.address
        published = owner.publish(source, meta, pricing=Pricing.FIXED, price=TOKEN)
        # The catalog indexes the publish within moments.
        deadline = time.monotonic() + 30
        while not (hits := researcher.search("embedded cohort", tag="medical")):
            assert time.monotonic() < deadline, "the catalog never indexed the dataset"
            time.sleep(0.1)
        assert hits[0]["id"] == published.dataset
        # Prices in base units, as everywhere in the SDK.
        assert [h["id"] for h in researcher.search("embedded", max_price=TOKEN)] == [
            published.dataset
        ]
        assert researcher.search("embedded", max_price=TOKEN // 2) == []
        ds = researcher.dataset(published.dataset)
        assert ds.info.controller == owner.identity.address
        ds.buy_and_order()  # the owner's agent delegates: no manual step
        got = ds.to_pandas()
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)
        assert ds.to_numpy().shape == frame.shape
        # An access condition from the SDK: the proxies check it before each re-encryption.
        mine = owner.dataset(published.dataset)
        mine.set_condition("order AND after:2099-01-01")
        assert ds.condition() == "order AND after:2099-01-01"
        with pytest.raises(dg.DatagoraError, match="not open before 2099-01-01"):
            ds.read_bytes()
        mine.set_condition("order AND before:2099-01-01")
        assert ds.read_bytes() == source.read_bytes()
        mine.set_condition(None)
        assert ds.condition() is None
        # Compute-to-data on the owner's own in-process compute node.
        owner.offer_compute(published.dataset, [COUNT])
        job = ds.compute(COUNT, {})
        assert job.wait(120)["state"] == "succeeded"
        files = job.files(tmp_path / "result")
        assert json.loads(files[0].read_text()) == {"rows": len(frame)}
        # The owner stops trusting it: the next job waits for review, and `wait` returns at
        # once (a person decides) instead of blocking; the owner denies it from the SDK.
        owner.untrust(published.dataset, COUNT)
        pending = ds.compute(COUNT, {})
        started = time.monotonic()
        assert pending.wait(120)["state"] == "pending"
        assert time.monotonic() - started < 5
        assert pending.job in {j["job"] for j in owner.pending_jobs(published.dataset)}
        assert owner.review_job(pending.job)["code"] == COUNT
        assert owner.deny_job(pending.job, "not trusted any more")["state"] == "denied"
        assert pending.wait(120)["state"] == "denied"
        assert owner.offer_compute(published.dataset, dp=True)["differential_privacy"] is True
        # A new account gets tokens from the faucet (a development chain) or a transfer.
        newcomer = Identity.generate().address
        funded = owner.fund(newcomer, 3 * TOKEN)
        assert funded.balance == 3 * TOKEN and funded.gas_wei > 0
        assert researcher.transfer(newcomer, TOKEN).balance == 4 * TOKEN
        with pytest.raises(dg.DatagoraError, match="holds"):
            owner.account(7).transfer(newcomer, TOKEN)  # account 7 holds no tokens
        # Metadata without services: one download service that matches the pricing.
        plain = {"title": "Grant only", "license": "CC-BY-4.0", "creator": "me"}
        granted = owner.publish(source, plain, pricing=Pricing.NONE)
        (service,) = owner.metadata(granted.dataset).services
        assert (service.type, service.price, service.policy) == ("download", "0", "approval")
        urls = [*owner.network.storage, *owner.network.proxies, owner.network.catalog]
        base = owner.network.base
    for url in urls:  # every server stopped, the files removed
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=2)
    assert not base.exists()


def test_train_across_two_owners_routes_each_dataset_to_its_owners_node(tmp_path: Path) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    features = ["mean_radius", "mean_texture", "worst_area"]
    halves = [frame.iloc[0::2], frame.iloc[1::2]]
    with dg.connect(embedded=True) as first:
        owners = [first, first.account(3)]
        datasets = []
        for k, (owner, half) in enumerate(zip(owners, halves, strict=True)):
            source = tmp_path / f"hospital{k}.csv"
            half[[*features, "target"]].to_csv(source, index=False)
            meta = {"title": f"Hospital {k}", "license": "CC-BY-4.0", "creator": f"h{k}"}
            published = owner.publish(source, meta, price=TOKEN)
            owner.offer_compute(published.dataset, ["fedavg-logistic"])
            datasets.append(published.dataset)
        nodes = {first.network.compute_node(d) for d in datasets}
        assert len(nodes) == 2  # each owner runs its own compute node
        researcher = first.account(2)
        model = researcher.train(datasets, rounds=1, target="target", features=features)
        x, y = frame[features].to_numpy(), frame["target"].to_numpy()
        assert model.score(x, y) > 0.85 and len(model.jobs) == 2 * 2


def test_embedded_refuses_a_network_and_bad_accounts() -> None:
    with pytest.raises(ConfigError, match="embedded=True starts its own network"):
        dg.connect(Path("network.json"), embedded=True)
    with pytest.raises(ConfigError, match="development account"):
        dg.connect(embedded=True, account="researcher")


def test_publish_and_buy_work_where_jobs_cannot_be_sandboxed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A machine without bubblewrap, as the compute sandbox's probe reports it: the
    # compute node would refuse to start, so publishing must not start it.
    missing = "bubblewrap (bwrap) is not installed: 'make setup' as root installs it"
    monkeypatch.setitem(sandbox_module._probe_cache, os.geteuid(), missing)
    frame = _frame().iloc[:20]
    source = tmp_path / "small.csv"
    frame.to_csv(source, index=False)
    meta = {"title": "No sandbox here", "license": "CC-BY-4.0", "creator": "laptop"}
    with dg.connect(embedded=True) as owner:
        published = owner.publish(source, meta, price=TOKEN)
        researcher = owner.account(2)
        ds = researcher.dataset(published.dataset)
        ds.buy_and_order()
        pd.testing.assert_frame_equal(ds.to_pandas(), frame, check_dtype=False)
        # Compute, asked for, says exactly why it cannot start.
        with pytest.raises(SandboxUnavailable, match=r"bubblewrap .* not installed"):
            owner.network.compute_node(published.dataset)
