"""`datagora up` end to end, through the CLI and HTTP only: start a network of real
processes, publish, buy and download, stop with SIGINT (nothing left running),
start again on the same directory (same contracts, same data), stop again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datagora.ledger import Ledger, dev_account
from datagora.node.launcher import HAS_COMPUTE
from datagora.storage.auth import WriteSigner

pytestmark = pytest.mark.slow

DEADLINE = 300.0  # liveness deadlines only: this machine is small and shared


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "datagora", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"datagora {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


def processes_under(directory: Path) -> list[int]:
    """Processes whose command line names `directory` (every child of `up` does)."""
    marker = str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class Up:
    """One `python -m datagora up` process on `directory`."""

    def __init__(self, directory: Path, env: dict[str, str], *size: str) -> None:
        self.directory = directory
        self.env = env
        self.log = directory.parent / "up.log"
        size = size or ("--storage", "6", "--proxies", "3", "--threshold", "2")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "datagora", "up", "--dir", str(directory), *size],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_healthy(self) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"up exited ({self.process.returncode}): {self.output()}")
            if (self.directory / "network.json").exists():
                result = cli(self.env, "status", "--json", check=False)
                last = result.stdout + result.stderr
                if result.returncode == 0:
                    report: dict[str, Any] = json.loads(result.stdout)
                    assert report["ok"] and all(p["ok"] for p in report["parts"])
                    return report
            time.sleep(1.0)
        raise AssertionError(f"the network did not become healthy: {last[-2000:]}")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=DEADLINE)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """Last resort in `finally`: the whole group of `up` and anything left under the dir."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in processes_under(self.directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATAGORA_KEYS_DIR", "DATAGORA_PASSWORD", "DATAGORA_ACCOUNT")
    }
    yield clean | {"DATAGORA_NETWORK": str(tmp_path / "net" / "network.json")}


def until(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"gave up waiting for {what}")


def chain_info(env: dict[str, str], network: dict[str, Any], directory: Path) -> dict[str, Any]:
    args = ["chain", "info", "--rpc", network["chain_url"]]
    out = cli(env, *args, "--deployment", str(directory / "deployment.json"), "--json").stdout
    info: dict[str, Any] = json.loads(out)
    return info


def indexed(env: dict[str, str], title: str) -> bool:
    result = json.loads(cli(env, "search", title, "--json").stdout)
    return any(item["title"] == title for item in result["items"])


def try_download(env: dict[str, str], dataset: int, target: Path, account: str) -> bool:
    args = ["download", str(dataset), "-o", str(target), "--account", account]
    result = cli(env, *args, check=False)
    return result.returncode == 0


def pid_on_port(directory: Path, url: str) -> int:
    """The child of `up` serving `url`."""
    port = url.rsplit(":", 1)[1]
    return next(
        pid
        for pid in processes_under(directory)
        if f"--port\0{port}\0".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    )


def restarted(env: dict[str, str], part: str) -> bool:
    """`status` says every part answers and `part` was restarted once."""
    result = cli(env, "status", "--json", check=False)
    if result.returncode != 0:
        return False
    parts = {p["part"]: p for p in json.loads(result.stdout)["parts"]}
    return bool(parts[part]["restarts"] == 1 and "restarted 1 time" in parts[part]["detail"])


def test_up_publish_restart(tmp_path: Path, env: dict[str, str]) -> None:
    directory = tmp_path / "net"
    data = b"radius,label\n" + b"".join(b"%d.5,%d\n" % (i, i % 2) for i in range(5000))
    source = tmp_path / "cohort.csv"
    source.write_bytes(data)
    up = Up(directory, env)
    try:
        report = up.wait_healthy()
        # `up` says when it is ready, and (below) that it stopped.
        until(lambda: "ready:" in up.output(), "`up` to say it is ready")
        parts = {p["part"] for p in report["parts"]}
        assert {"chain", "agent", "catalog"} <= parts
        assert {f"storage{i}" for i in range(1, 7)} <= parts
        assert {f"proxy{i}" for i in range(1, 4)} <= parts
        network = json.loads((directory / "network.json").read_text())
        # The network file lists no nodes: `up` registered them, clients discover them.
        assert network["threshold"] == 2 and network["storage"] == network["proxies"] == []
        nodes = json.loads(cli(env, "node", "list", "--json").stdout)
        storage = [n["endpoint"] for n in nodes if n["roles"] == ["storage"]]
        assert len(storage) == 6 and all(n["state"] == "active" for n in nodes)
        assert len({n["address"] for n in nodes}) == len(nodes) == 6 + 3 + (1 if HAS_COMPUTE else 0)
        network["storage"] = storage
        assert (directory / "password").stat().st_mode & 0o777 == 0o600
        twice = cli(env, "up", "--dir", str(directory), check=False)
        assert twice.returncode == 1 and "another `datagora up`" in twice.stderr

        # Plain HTTP: the catalog lists, a storage node round-trips a blob written
        # by a development account (each has a quota), never an anonymous one.
        assert httpx.get(f"{network['catalog']}/datasets", timeout=30).status_code == 200
        blob = b"a blob for the storage node " + os.urandom(16)
        name = hashlib.sha256(blob).hexdigest()
        node = network["storage"][0]
        anonymous = httpx.put(f"{node}/shares/{name}", content=blob, timeout=30)
        assert anonymous.status_code == 401
        chain_id = httpx.get(f"{node}/health", timeout=30).json()["writes"]["chain_id"]
        signed = WriteSigner(dev_account(1)).header(
            node, "PUT", f"/shares/{name}", bytes.fromhex(name), len(blob), chain_id
        )
        assert httpx.put(f"{node}/shares/{name}", content=blob, headers=signed).is_success
        assert httpx.get(f"{node}/shares/{name}", timeout=30).content == blob

        # The CLI: publish as the owner, buy and download as the researcher.
        published = cli(
            env, "publish", str(source), "--title", "Cohort up", "--price", "1",
            "--account", "owner", "--json",
        )  # fmt: skip
        dataset = int(json.loads(published.stdout)["dataset"])
        cli(env, "buy", str(dataset), "--account", "researcher")
        copy = tmp_path / "copy.csv"
        # The agent delegates to the proxies once it sees the order: retry until then.
        until(lambda: try_download(env, dataset, copy, "researcher"), "the download")
        assert copy.read_bytes() == data
        until(lambda: indexed(env, "Cohort up"), "the catalog to index the dataset")
        # A wallet finds the dataset's ERC-721 metadata: `up` points tokenURI at its catalog.
        ledger = Ledger.connect(network["chain_url"], directory / "deployment.json")
        uri = ledger.data_nft.token_uri(dataset)
        assert uri == f"{network['catalog'].rstrip('/')}/nft/{dataset}"
        assert httpx.get(uri, timeout=30).json()["name"] == "Cohort up"

        # A storage node killed: the download still works, and `up` starts it again
        # on its port while the rest keep serving.
        victim = pid_on_port(directory, network["storage"][2])
        os.kill(victim, signal.SIGKILL)
        meanwhile = tmp_path / "meanwhile.csv"
        until(lambda: try_download(env, dataset, meanwhile, "researcher"), "a degraded download")
        assert meanwhile.read_bytes() == data
        until(lambda: restarted(env, "storage3"), "storage3 to be restarted")
        assert pid_on_port(directory, network["storage"][2]) != victim
        assert "storage3 exited unexpectedly (code -9); restarting it" in up.output()
        assert up.process.poll() is None
        before = chain_info(env, network, directory)
        assert before["datasets"] == 1

        assert up.interrupt() == 0, up.output()
        assert up.output().rstrip().endswith("(its state is kept)"), up.output()
        assert "stopped: no part of the network is running" in up.output()
        until(lambda: not processes_under(directory), "every child to exit")
        ports = json.loads((directory / "ports.json").read_text())

        # Again on the same directory: the same contracts, and the chain kept its state.
        up = Up(directory, env)
        up.wait_healthy()
        again = json.loads((directory / "network.json").read_text())
        assert again["deployment"]["contracts"] == network["deployment"]["contracts"]
        assert chain_info(env, again, directory)["datasets"] == 1
        assert json.loads((directory / "ports.json").read_text()) == ports
        assert indexed(env, "Cohort up")
        again_nodes = json.loads(cli(env, "node", "list", "--role", "storage", "--json").stdout)
        assert [n["endpoint"] for n in again_nodes] == storage  # same ports, same records
        assert httpx.get(f"{storage[0]}/shares/{name}", timeout=30).content == blob
        second = tmp_path / "second.csv"
        until(lambda: try_download(env, dataset, second, "owner"), "the owner's download")
        assert second.read_bytes() == data
        # Every share checked through the CLI: nothing to rebuild on a healthy network.
        checked = json.loads(cli(env, "repair", str(dataset), "--check", "--json").stdout)
        assert checked["healthy"] and checked["rebuilt"] == 0 and not checked["dead_nodes"]

        assert up.interrupt() == 0, up.output()
        until(lambda: not processes_under(directory), "every child to exit")
    finally:
        up.kill()
    assert not processes_under(directory)


def test_a_dying_node_or_chain_is_restarted_and_the_network_keeps_serving(
    tmp_path: Path, env: dict[str, str]
) -> None:
    directory = tmp_path / "net"
    up = Up(directory, env, "--storage", "1", "--proxies", "1", "--threshold", "1")
    try:
        up.wait_healthy()
        # The network file lists no proxy (clients find them in the registry).
        parts = json.loads((directory / "supervisor.json").read_text())["parts"]
        os.kill(parts["proxy1"]["pid"], signal.SIGKILL)
        until(lambda: restarted(env, "proxy1"), "proxy1 to be restarted")
        assert up.process.poll() is None
        # The chain is restarted too, on its saved state with the journal replayed
        # (tests/node/test_chain_journal.py checks that nothing is lost).
        network = json.loads((directory / "network.json").read_text())
        before = chain_info(env, network, directory)
        supervisor = json.loads((directory / "supervisor.json").read_text())
        os.killpg(supervisor["parts"]["chain"]["pid"], signal.SIGKILL)
        until(lambda: restarted(env, "chain"), "the chain to be restarted")
        assert up.process.poll() is None
        assert "the chain exited unexpectedly (code -9); restarted on the saved state" in (
            up.output()
        )
        after = chain_info(env, network, directory)
        assert after.pop("block") >= before.pop("block")
        assert after == before  # same contracts, same datasets: nothing lost
        assert up.interrupt() == 0, up.output()
        until(lambda: not processes_under(directory), "every child to exit")
        # Down parts make `status` fail with one line.
        result = cli(env, "status", check=False)
        assert result.returncode == 1 and "parts down" in result.stderr
    finally:
        up.kill()
