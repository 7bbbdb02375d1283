"""Compute-to-data through the CLI and the SDK, on real processes: anvil, three storage
nodes and a `datagora node --roles compute` process that reads the owner's published
datasets from the storage nodes and decrypts them per job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_breast_cancer

import datagora as dg
from datagora.compute.errors import BudgetExceeded, JobRefused
from datagora.compute.jobs import algorithm_hash
from datagora.compute.node import REQUEST_HEADER
from datagora.compute.owner import encode_header, sign_owner_request
from datagora.crypto.keys import Identity, import_account
from datagora.ledger import Chain, JobStatus, Ledger, Pricing, dev_account
from datagora.ledger.anvil import Anvil
from datagora.market import Endpoints, Marketplace
from datagora.market.compute import OwnerClient
from datagora.node.network import Network
from datagora.ports import free_port
from datagora.testing.storage import LocalNodes

pytestmark = pytest.mark.slow

PASSWORD = "compute-test-password"
TOKEN = 10**18
ACCOUNTS = {"owner": 1, "researcher": 2, "other": 4}
DEADLINE = 120.0  # liveness only

COUNT = """
import json

def run(inputs, params, output_dir):
    (item,) = inputs.values()
    frame = item.frame
    (output_dir / "count.json").write_text(json.dumps({
        "rows": len(frame), "positives": int(frame[params["target"]].sum())}))
    print("counted", len(frame), "rows of", item.path.name)
"""

REVIEWED = """
import json

def run(inputs, params, output_dir):
    (item,) = inputs.values()
    (output_dir / "mean.json").write_text(json.dumps({"mean_radius":
        float(item.frame["mean_radius"].mean()), "tag": params["tag"]}))
"""


def frames() -> list[object]:
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    shuffled = frame.sample(frac=1.0, random_state=0)
    return [shuffled.iloc[i::3] for i in range(3)]


@dataclass
class Net:
    base: Path
    env: dict[str, str]
    ledger: Ledger
    network_file: Path
    compute_url: str
    compute_dir: Path
    datasets: list[int]
    rows: list[int]
    positives: list[int]
    algorithms: dict[str, Path]
    dp_datasets: list[int]


def cli(net: Net, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "datagora", *args],
        env=net.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"datagora {' '.join(args)} failed: {result.stderr[-3000:]}")
    return result


def identity(name: str) -> Identity:
    return Identity.from_private_key(bytes(dev_account(ACCOUNTS[name]).key))


def start_compute_node(
    base: Path, anvil: Anvil, deployment: Path, storage: list[str], port: int
) -> subprocess.Popen[bytes]:
    log = open(base / "compute.log", "ab")  # noqa: SIM115 - closed with the process
    args = [
        *("node", "--roles", "compute", "--port", str(port), "--data", str(base / "compute")),
        *("--rpc", anvil.url, "--deployment", str(deployment)),
        *("--keys", str(base / "keys"), "--account", "owner"),
        *[a for url in storage for a in ("--storage-node", url)],
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "datagora", *args],
        env={**os.environ, "DATAGORA_PASSWORD": PASSWORD},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("compute-net")
    (base / "keys").mkdir()
    (base / "password").write_text(PASSWORD)
    for name, index in ACCOUNTS.items():
        import_account(
            base / "keys", bytes(dev_account(index).key).hex(), PASSWORD, name, scrypt_n=2**10
        )
    with Anvil() as anvil, LocalNodes(3, base / "storage") as storage:
        ledger = Ledger.deploy(Chain.rpc(anvil.url), dev_account(0))
        deployment = base / "deployment.json"
        ledger.deployment.save(deployment)
        ledger.market_token.mint(dev_account(0), identity("researcher").address, 100 * TOKEN)
        port = free_port()
        network_file = base / "network.json"
        Network(
            chain_url=anvil.url,
            deployment=ledger.deployment,
            storage=storage.urls,
            compute=f"http://127.0.0.1:{port}",
            state_dir=str(base),
        ).save(network_file)
        # The owner publishes three shares of the breast cancer table (download service
        # only; `compute offer` adds the compute service below).
        owner = Marketplace(ledger, Endpoints(storage.urls), identity("owner"))
        datasets, rows, positives = [], [], []
        for i, frame in enumerate(frames()):
            path = base / f"hospital{i}.csv"
            frame.to_csv(path, index=False)  # type: ignore[attr-defined]
            meta = {
                "title": f"Breast cancer cohort {i}",
                "license": "CC-BY-4.0",
                "creator": f"hospital {i}",
                "columns": [
                    {"name": c, "type": "int" if c == "target" else "float"}
                    for c in frame.columns  # type: ignore[attr-defined]
                ],
                "services": [{"id": 0, "type": "download", "price": str(TOKEN)}],
            }
            pub = owner.publish(path, meta, pricing=Pricing.FIXED, price=TOKEN, k=2, n=3)
            datasets.append(pub.dataset)
            rows.append(len(frame))  # type: ignore[arg-type]
            positives.append(int(frame["target"].sum()))  # type: ignore[index]
        # The same cohorts again, on which the owner will require DP. Published before the
        # node sends its first transaction: the node signs with the owner's account, and
        # the RPC chain client does not recover from a nonce another process used after
        # it cached one (a ledger-layer weakness).
        dp_datasets = []
        for i, frame in enumerate(frames()):
            path = base / f"dp{i}.csv"
            frame.to_csv(path, index=False)  # type: ignore[attr-defined]
            meta = {
                "title": f"Breast cancer cohort {i} (DP)",
                "license": "CC-BY-4.0",
                "creator": f"hospital {i}",
                "services": [{"id": 0, "type": "download", "price": str(TOKEN)}],
            }
            pub = owner.publish(path, meta, pricing=Pricing.FIXED, price=TOKEN, k=2, n=3)
            dp_datasets.append(pub.dataset)
        algorithms = {}
        for name, code in (("count", COUNT), ("reviewed", REVIEWED)):
            algorithms[name] = base / f"{name}.py"
            algorithms[name].write_text(code)
        node = start_compute_node(base, anvil, deployment, storage.urls, port)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATAGORA_KEYS_DIR", "DATAGORA_PASSWORD", "DATAGORA_ACCOUNT")
        }
        env["DATAGORA_NETWORK"] = str(network_file)
        the_net = Net(
            base,
            env,
            ledger,
            network_file,
            f"http://127.0.0.1:{port}",
            base / "compute" / "compute",
            datasets,
            rows,
            positives,
            algorithms,
            dp_datasets,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                assert node.poll() is None, (base / "compute.log").read_text()[-3000:]
                try:
                    health = httpx.get(f"{the_net.compute_url}/health", timeout=5).json()
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "the compute node did not start"
                    time.sleep(0.2)
            assert health["stored_datasets"] and health["datasets"] == []
            # The CLI offers compute on the first; the SDK (the same code) on the others.
            offered = cli(
                the_net, "compute", "offer", str(datasets[0]), "--account", "owner", "--json",
                "--trust", "fedavg-logistic", "--trust", str(algorithms["count"]),
            )  # fmt: skip
            assert json.loads(offered.stdout)["metadata_updated"] is True
            owner_sdk = dg.connect(network_file, account="owner", password=PASSWORD)
            for dataset in datasets[1:]:
                owner_sdk.offer_compute(dataset, ["fedavg-logistic", algorithms["count"]])
            for dataset in dp_datasets:
                offered = cli(
                    the_net, "compute", "offer", str(dataset), "--require-dp", "--trust",
                    "fedavg-logistic-dp", "--account", "owner", "--json",
                )  # fmt: skip
                assert json.loads(offered.stdout)["differential_privacy"] is True
            yield the_net
        finally:
            node.terminate()
            node.wait(timeout=60)


def job_of(result: subprocess.CompletedProcess[str]) -> int:
    return int(json.loads(result.stdout)["job"])


def test_submit_status_logs_result_only_for_the_consumer(net: Net, tmp_path: Path) -> None:
    dataset = net.datasets[0]
    researcher = identity("researcher").address
    assert not net.ledger.datatoken(dataset).has_valid_order(researcher, 1)
    submitted = cli(
        net, "compute", "submit", str(dataset), "--algorithm", str(net.algorithms["count"]),
        "--param", "target=target", "--wait", "--json", "--account", "researcher",
    )  # fmt: skip
    info = json.loads(submitted.stdout)
    assert info["ordered"] is True and info["state"] == "succeeded", info
    job = info["job"]
    # Another job reuses the valid order: no new purchase.
    balance = net.ledger.market_token.balance_of(researcher)
    market = dg.connect(net.network_file, account="researcher", password=PASSWORD)
    market.compute(dataset, net.algorithms["count"], {"target": "target"}).wait(DEADLINE)
    assert net.ledger.market_token.balance_of(researcher) == balance

    status = json.loads(
        cli(net, "compute", "status", str(job), "--json", "--account", "researcher").stdout
    )
    assert status["state"] == "succeeded" and status["on_chain"] == "succeeded"
    logs = cli(net, "compute", "logs", str(job), "--account", "researcher").stdout
    assert f"counted {net.rows[0]} rows of dataset-{dataset}.csv" in logs

    out = tmp_path / "result"
    result = json.loads(
        cli(
            net, "compute", "result", str(job), "-o", str(out), "--json", "--account", "researcher"
        ).stdout
    )
    assert result["files"] == ["count.json"]
    # The node computed on the owner's stored, encrypted data, decrypted for this job.
    assert json.loads((out / "count.json").read_text()) == {
        "rows": net.rows[0],
        "positives": net.positives[0],
    }
    record = net.ledger.compute.job(job)
    assert record.status == JobStatus.SUCCEEDED and record.result.hex() == result["result_hash"]
    assert record.algorithm == algorithm_hash(net.algorithms["count"].read_bytes())
    assert record.consumer == researcher

    # Nobody else reads the job: one line, non-zero exit; nor through the SDK.
    args = ("result", str(job), "-o", str(tmp_path / "x"), "--account", "other")
    refused = cli(net, "compute", *args, check=False)
    assert refused.returncode == 1, refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "only the job's consumer" in lines[0]
    assert not (tmp_path / "x").exists()
    other = dg.connect(net.network_file, account="other", password=PASSWORD)
    for read in (other.job(job).status, other.job(job).logs, other.job(job).result):
        with pytest.raises(dg.DatagoraError, match="only the job's consumer"):
            read()
    # The decrypted input lived only in the job's private directory.
    assert list((net.compute_dir / "inputs").iterdir()) == []


def test_owner_reviews_approves_and_denies(net: Net, tmp_path: Path) -> None:
    dataset = net.datasets[1]
    code = str(net.algorithms["reviewed"])
    args = ("--algorithm", code, "--param", "tag=a", "--json", "--account", "researcher")
    first = job_of(cli(net, "compute", "submit", str(dataset), *args))
    market = dg.connect(net.network_file, account="researcher", password=PASSWORD)
    second = market.compute(dataset, Path(code), {"tag": "b"}).job
    for job in (first, second):
        assert net.ledger.compute.job(job).status == JobStatus.PENDING

    listed = json.loads(cli(net, "jobs", "list", "--json", "--account", "owner").stdout)
    assert {j["job"] for j in listed} >= {first, second}
    review = cli(net, "jobs", "review", str(first), "--account", "owner").stdout
    assert REVIEWED.strip() in review and '"tag": "a"' in review

    # Only the dataset's controller: others list nothing, and may not review or decide.
    refused = cli(net, "jobs", "approve", str(first), "--account", "researcher", check=False)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert f"only the controller of dataset {dataset}" in refused.stderr
    chain_id = net.ledger.chain.chain_id
    registry = net.ledger.compute.address
    for who in ("researcher", "other"):
        with OwnerClient(net.compute_url, identity(who), chain_id, registry) as owner:
            assert owner.pending() == []
            for act in (owner.review, owner.approve, lambda j: owner.deny(j, "x")):
                with pytest.raises(JobRefused, match="only the controller"):
                    act(first)
    # A denial reason other than the one signed is refused.
    with OwnerClient(net.compute_url, identity("owner"), chain_id, registry) as owner:
        signed = sign_owner_request(
            identity("owner"), chain_id, "deny", first, "signed reason", verifying_contract=registry
        )
        r = httpx.post(
            f"{net.compute_url}/owner/jobs/{first}/deny",
            headers={REQUEST_HEADER: encode_header(signed)},
            json={"reason": "another reason"},
        )
        assert r.status_code == 403 and "not the one signed" in r.json()["detail"]
    assert net.ledger.compute.job(first).status == JobStatus.PENDING

    denied = cli(
        net, "jobs", "deny", str(first), "--reason", "prints too much", "--account", "owner",
        "--json",
    )  # fmt: skip
    assert json.loads(denied.stdout)["state"] == "denied"
    assert net.ledger.compute.job(first).status == JobStatus.DENIED
    decided = [e for e in net.ledger.events() if e.name == "JobDecided" and int(e["job"]) == first]
    assert decided and decided[0]["reason"] == "prints too much"
    with (
        OwnerClient(net.compute_url, identity("owner"), chain_id, registry) as owner,
        pytest.raises(JobRefused, match="denied, not pending"),
    ):
        owner.approve(first)

    cli(net, "jobs", "approve", str(second), "--account", "owner")
    assert market.job(second).wait(DEADLINE)["state"] == "succeeded"
    (mean,) = market.job(second).files(tmp_path / "approved")
    assert json.loads(mean.read_text())["tag"] == "b"
    denied_status = market.job(first).status()
    assert denied_status["state"] == "denied" and "prints too much" in denied_status["reason"]


def test_train_federated_over_three_datasets(net: Net, tmp_path: Path) -> None:
    model_file = tmp_path / "model.json"
    trained = cli(
        net, "train", "--datasets", *map(str, net.datasets), "--algorithm", "fedavg-logistic",
        "--rounds", "1", "-o", str(model_file), "--json", "--account", "researcher",
    )  # fmt: skip
    model = json.loads(trained.stdout)
    assert model["datasets"] == net.datasets and len(model["jobs"]) == 3 * (1 + 1)
    assert json.loads(model_file.read_text())["coef"] == model["coef"]
    for job in model["jobs"]:
        record = net.ledger.compute.job(job)
        assert record.status == JobStatus.SUCCEEDED and record.result != bytes(32)
    # The averaged model classifies the whole table well (it saw no row itself).
    import numpy as np

    frame = load_breast_cancer(as_frame=True).frame
    x = frame.drop(columns=["target"]).to_numpy()
    z = ((x - np.array(model["mean"])) / np.array(model["scale"])) @ np.array(model["coef"])
    accuracy = float(((z + model["intercept"] > 0) == frame["target"].to_numpy()).mean())
    assert accuracy > 0.9


def test_sdk_compute_and_train(net: Net, tmp_path: Path) -> None:
    market = dg.connect(net.network_file, account="researcher", password=PASSWORD)
    job = market.compute(net.datasets[2], net.algorithms["count"], {"target": "target"})
    assert job.wait(DEADLINE)["state"] == "succeeded"
    files = job.files(tmp_path / "out")
    assert [f.name for f in files] == ["count.json"]
    assert json.loads(files[0].read_text())["rows"] == net.rows[2]
    assert "counted" in job.logs()
    # The same job, seen by another account: refused by the node.
    other = dg.connect(net.network_file, account="other", password=PASSWORD)
    with pytest.raises(dg.DatagoraError, match="only the job's consumer"):
        other.job(job.job).status()

    # A dataset another account controls: this node (the owner's) does not serve it.
    source = tmp_path / "foreign.csv"
    source.write_text("a,b\n" + "".join(f"{i},{i % 2}\n" for i in range(50)))
    meta = {
        "title": "Not the owner's",
        "license": "CC-BY-4.0",
        "creator": "other",
        "services": [{"id": 0, "type": "download", "price": str(TOKEN)}],
    }
    foreign = other.publish(source, meta, pricing=Pricing.FIXED, price=TOKEN, k=2, n=3)
    other.offer_compute(foreign.dataset, [net.algorithms["count"]])
    researcher = identity("researcher").address
    balance = net.ledger.market_token.balance_of(researcher)
    with pytest.raises(JobRefused, match="does not compute on dataset"):
        market.compute(foreign.dataset, net.algorithms["count"], {"target": "b"})
    # The node is asked first: refused before ordering, so nothing was paid.
    refused = cli(
        net, "compute", "submit", str(foreign.dataset), "--algorithm",
        str(net.algorithms["count"]), "--account", "researcher", check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not compute on dataset" in lines[0], refused.stderr
    assert not net.ledger.datatoken(foreign.dataset).has_valid_order(researcher, 1)
    assert net.ledger.market_token.balance_of(researcher) == balance

    seen: list[int] = []
    model = market.train(
        net.datasets[:2], rounds=1, target="target", on_job=lambda j, info: seen.append(j)
    )
    assert sorted(seen) == sorted(model.jobs) and len(model.jobs) == 2 * 2
    frame = load_breast_cancer(as_frame=True).frame
    x, y = frame.drop(columns=["target"]).to_numpy(), frame["target"].to_numpy()
    assert model.score(x, y) > 0.85


DP_FEATURES = ["worst_radius", "worst_texture", "worst_concave_points", "worst_area"]
# [0, 1.5 x max], the max from the summary statistics scikit-learn documents for the
# dataset (load_breast_cancer().DESCR), not from the rows the hospitals hold.
DP_BOUNDS = {
    "worst_radius": [0.0, 1.5 * 36.04],
    "worst_texture": [0.0, 1.5 * 49.54],
    "worst_concave_points": [0.0, 1.5 * 0.291],
    "worst_area": [0.0, 1.5 * 4254.0],
}


def one_line(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


def test_train_under_dp(net: Net, tmp_path: Path) -> None:
    """The owner requires DP on three cohorts (`compute offer --require-dp`); the researcher
    trains with `train --dp-epsilon E --bounds FILE`, sees the epsilon spent per dataset,
    and a second training over the node's budget (3.0 per consumer) is refused."""
    researcher = identity("researcher").address
    ids = [str(d) for d in net.dp_datasets]
    base = ("train", "--datasets", *ids, "--features", ",".join(DP_FEATURES))
    who = ("--account", "researcher")
    # Refused before anything is ordered: no DP declaration, or no bounds.
    one_line(cli(net, *base, *who, check=False), "requires differential privacy")
    one_line(cli(net, *base, "--dp-epsilon", "1", *who, check=False), "needs --bounds")
    assert not any(net.ledger.datatoken(d).has_valid_order(researcher, 1) for d in net.dp_datasets)

    bounds = tmp_path / "bounds.json"
    bounds.write_text(json.dumps(DP_BOUNDS))
    model_file = tmp_path / "dp-model.json"
    dp_args = ("--dp-epsilon", "2.5", "--bounds", str(bounds))
    trained = cli(net, *base, *dp_args, "-o", str(model_file), *who)
    spent = ", ".join(f"dataset {d}: 2.5" for d in ids)
    assert f"epsilon spent: {spent}" in trained.stdout, trained.stdout
    model = json.loads(model_file.read_text())
    assert model["format"] == "datagora.fedavg-logistic-dp.v1"
    assert model["epsilon"] == dict.fromkeys(ids, 2.5) and len(model["jobs"]) == 3
    events = net.ledger.events()
    completed = {e["job"]: e["epsilon_milli"] for e in events if e.name == "JobCompleted"}
    assert [completed[j] for j in model["jobs"]] == [2500] * 3

    import numpy as np

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    x = np.clip(frame[DP_FEATURES].to_numpy(), model["lower"], model["upper"])
    z = ((x - np.array(model["mean"])) / np.array(model["scale"])) @ np.array(model["coef"])
    accuracy = float(((z + model["intercept"] > 0) == frame["target"].to_numpy()).mean())
    print(f"CLI DP training (epsilon 2.5 per site): accuracy on the whole table {accuracy:.4f}")

    # 0.5 of the node's 3.0 is left on each: the SDK and the CLI are refused, nothing runs.
    market = dg.connect(net.network_file, account="researcher", password=PASSWORD)
    with pytest.raises(BudgetExceeded, match="no job was submitted"):
        market.train(
            net.dp_datasets,
            target="target",
            features=DP_FEATURES,
            dp={"epsilon": 2.5, "bounds": DP_BOUNDS},
        )
    one_line(cli(net, *base, *dp_args, *who, check=False), "0.5 left of 3")
    events = [e for e in net.ledger.events() if e.name == "JobCompleted"]
    assert len(events) == len(completed)


def test_owner_review_of_code_on_a_dp_dataset_says_it_is_not_dp(net: Net) -> None:
    """After `test_train_under_dp` (0.5 epsilon is left): the owner's review of arbitrary
    code on a DP dataset says, in the CLI, that the node does not enforce DP for it."""
    dataset = net.dp_datasets[0]
    dp = json.dumps({"epsilon": 0.1, "bounds": {"worst_radius": [0, 40]}})
    args = ("--algorithm", str(net.algorithms["reviewed"]), "--param", "tag=dp")
    submitted = cli(net, "compute", "submit", str(dataset), *args, "--param", f"dp={dp}",
                    "--json", "--account", "researcher")  # fmt: skip
    job = job_of(submitted)
    shown = cli(net, "jobs", "review", str(job), "--account", "owner").stdout
    assert "differential privacy required, NOT enforced: NOT differentially private" in shown
    assert "Approve only code you have read" in shown
    review = json.loads(cli(net, "jobs", "review", str(job), "--account", "owner", "--json").stdout)
    assert review["differential_privacy"]["enforced"] is False
    cli(net, "jobs", "deny", str(job), "--reason", "not DP", "--account", "owner")
    # A job on a dataset without DP shows no such line.
    plain = job_of(
        cli(net, "compute", "submit", str(net.datasets[1]), *args, "--json", "--account",
            "researcher")
    )  # fmt: skip
    shown = cli(net, "jobs", "review", str(plain), "--account", "owner").stdout
    assert "differential privacy" not in shown
    cli(net, "jobs", "deny", str(plain), "--reason", "done", "--account", "owner")
