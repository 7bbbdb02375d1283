"""Every sandbox escape tried for real through a node; each fails with a reason, then a good job
still succeeds, and no private job directory is left behind."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from compute_helpers import breast_cancer, compute_dataset, identity, running, write_csv

from datagora.compute import Limits, OutputPolicy, Sandbox
from datagora.compute.jobs import algorithm_hash
from datagora.ledger import JobStatus, Ledger
from helpers import BUYER, OWNER

GOOD = """
import json
def run(inputs, params, output_dir):
    frame = next(iter(inputs.values())).frame
    (output_dir / "summary.json").write_text(json.dumps({"rows": len(frame)}))
"""


def escapes(port: int, secret: Path) -> dict[str, tuple[str, str]]:
    """name -> (algorithm, expected words of the reason)."""
    return {
        "network": (
            "import socket\ndef run(i, p, o):\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n",
            "network",
        ),
        "internet": (
            "import socket\ndef run(i, p, o):\n"
            "    socket.create_connection(('1.1.1.1', 443), timeout=5)\n",
            "network",
        ),
        "outside file": (f"def run(i, p, o):\n    print(open({str(secret)!r}).read())\n", "file"),
        "fork bomb": (
            "import os\ndef run(i, p, o):\n    while True:\n        os.fork()\n",
            "process",
        ),
        "memory bomb": (
            "def run(i, p, o):\n    hoard = []\n    while True:\n"
            "        hoard.append(bytearray(64 << 20))\n",
            "memory",
        ),
        "busy loop": ("def run(i, p, o):\n    while True:\n        pass\n", "CPU"),
        "sleeper": ("import time\ndef run(i, p, o):\n    time.sleep(3600)\n", "wall-clock"),
        "huge file": (
            "def run(i, p, o):\n    with open(o / 'big', 'wb') as f:\n        while True:\n"
            "            f.write(b'x' * (1 << 20))\n",
            "file size",
        ),
        "many files": (
            "def run(i, p, o):\n    for k in range(1000):\n"
            "        (o / f'part{k}').write_bytes(b'x' * (6 << 20))\n",
            "disk use",
        ),
        "over the output cap": (
            "def run(i, p, o):\n    for k in range(3):\n"
            "        (o / f'part{k}').write_bytes(b'x' * (3 << 20))\n",
            "larger than the cap",
        ),
        "copies the rows": (
            "def run(inputs, p, o):\n"
            "    frame = next(iter(inputs.values())).frame\n"
            "    half = frame.sample(frac=0.5, random_state=1)\n"
            "    half.to_json(o / 'rows.json', orient='records')\n",
            "reproduces",
        ),
        "no entry point": ("x = 1\n", "no run"),
    }


@pytest.fixture
def world_readable_secret():
    folder = Path(tempfile.mkdtemp(prefix="other-tenant-"))
    os.chmod(folder, 0o755)
    secret = folder / "secret.txt"
    secret.write_text("SECRET-7c1e-not-for-jobs\n")
    os.chmod(secret, 0o644)
    yield secret
    secret.unlink()
    folder.rmdir()


def test_escapes_fail_cleanly_and_the_node_keeps_serving(
    embedded_ledger: Ledger, tmp_path: Path, world_readable_secret: Path
) -> None:
    ledger = embedded_ledger
    buyer = identity(BUYER)
    dataset, order = compute_dataset(ledger, OWNER, buyer, tokens=1)
    data = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    limits = Limits(
        cpu_s=3,
        wall_s=12,
        memory_bytes=1 << 30,
        file_bytes=8 << 20,
        processes=32,
        disk_bytes=48 << 20,
    )
    uids = range(62400, 62404)  # jobs claim theirs here; checked for leftovers below
    sandbox = Sandbox(limits, scratch_dir=scratch, hide=[tmp_path / "owner"], uids=uids)
    with running(
        ledger=ledger,
        operator=identity(OWNER),
        datasets={dataset: data},
        data_dir=tmp_path / "node",
        sandbox=sandbox,
        policy=OutputPolicy(max_output_bytes=8 << 20),
        chain_lock=threading.RLock(),
        max_jobs_per_consumer=64,  # every escape queued at once by one consumer
    ) as node:
        health = httpx.get(f"{node.url}/health").json()
        assert health["sandbox"] == "bubblewrap" and health["isolation"] == "bubblewrap"
        cases = escapes(node.port, world_readable_secret)
        # Chain calls from this thread happen only while the node is idle (the embedded
        # chain is not thread-safe): trust everything first, check the chain at the end.
        for code, _ in [*cases.values(), (GOOD, "")]:
            ledger.compute.set_trusted(OWNER, dataset, algorithm_hash(code.encode()), True)
        with node.client(buyer, ledger.chain.chain_id) as client:
            jobs = {
                name: client.submit(dataset, order, code, {}) for name, (code, _) in cases.items()
            }
            good = client.submit(dataset, order, GOOD, {})
            for name, job in jobs.items():
                info = client.wait(job, timeout=300)
                assert info["state"] == "failed", (name, info)
                assert cases[name][1] in info["reason"], (name, info["reason"])
                logs = client.logs(job)
                assert "SECRET-7c1e" not in logs
                assert "17.99" not in logs  # no input value in the logs
            assert client.wait(good, timeout=120)["state"] == "succeeded"
        for job in jobs.values():
            assert ledger.compute.job(job).status == JobStatus.FAILED
        assert ledger.compute.job(good).status == JobStatus.SUCCEEDED
    # Private inputs are gone after every success and failure; no job process is left.
    assert list(scratch.iterdir()) == []
    # Killed processes are torn down by the kernel asynchronously: allow it a moment.
    deadline = time.monotonic() + 15
    while any(_processes_of(u) for u in uids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for u in uids for p in _processes_of(u)] == []


def _processes_of(uid: int | None) -> list[str]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if f"\nUid:\t{uid}\t" in Path(f"/proc/{p}/status").read_text():
                out.append(p)
        except OSError:  # the process ended while we looked
            continue
    return out


def test_logs_that_print_rows_are_withheld(embedded_ledger: Ledger, tmp_path: Path) -> None:
    ledger = embedded_ledger
    buyer = identity(BUYER)
    dataset, order = compute_dataset(ledger, OWNER, buyer, tokens=1)
    data = write_csv(breast_cancer(), tmp_path / "owner" / "cancer.csv")
    code = (
        "def run(inputs, p, o):\n"
        "    frame = next(iter(inputs.values())).frame\n"
        "    print(frame.head(40).to_string())\n"
        "    (o / 'ok.txt').write_text('done')\n"
    )
    ledger.compute.set_trusted(OWNER, dataset, algorithm_hash(code.encode()), True)
    with (
        running(
            ledger=ledger,
            operator=identity(OWNER),
            datasets={dataset: data},
            data_dir=tmp_path / "node",
            chain_lock=threading.RLock(),
        ) as node,
        node.client(buyer, ledger.chain.chain_id) as client,
    ):
        job = client.submit(dataset, order, code, {})
        assert client.wait(job, timeout=120)["state"] == "succeeded"
        logs = client.logs(job)
        assert "logs withheld" in logs and "17.99" not in logs
