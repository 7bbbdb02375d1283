"""The supervisor of `datagora up` on real child processes: a part that exits is
started again (same command, same port) after a back-off, a part that keeps dying
is reported once and left down, and a dead chain still stops the network."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datagora.node import launcher as launcher_module
from datagora.node.errors import NodeExited
from datagora.node.launcher import Launcher, LaunchPlan, Part

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher_module, "RESTART_FIRST", 0.05)
    monkeypatch.setattr(launcher_module, "RESTART_MAX", 0.4)


def part(tmp_path: Path, name: str, command: list[str], role: str = "storage") -> Part:
    return Part(name, role, 40000, command, tmp_path / f"{name}.log")


def run_until(launcher: Launcher, condition: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "gave up waiting"
        launcher.supervise()
        time.sleep(0.02)


def test_a_killed_part_is_restarted_and_the_rest_keep_running(tmp_path: Path, fast: None) -> None:
    said: list[str] = []
    launcher = Launcher(LaunchPlan(tmp_path), said.append)
    victim = launcher._spawn(part(tmp_path, "storage1", SLEEPER))
    other = launcher._spawn(part(tmp_path, "storage2", SLEEPER))
    chain = launcher._spawn(part(tmp_path, "chain", SLEEPER, "chain"))
    try:
        assert victim.process is not None and other.process is not None
        first, bystander = victim.process.pid, other.process.pid
        os.kill(first, signal.SIGKILL)
        run_until(launcher, lambda: victim.restarts == 1 and victim.running)
        assert victim.process.pid != first and victim.command == SLEEPER
        assert victim.port == 40000 and other.process.pid == bystander and other.running
        assert said == [
            "storage1 exited unexpectedly (code -9); restarting it in 0.05 s on port 40000"
        ]
        assert "restarting (restart 1) storage1" in victim.log.read_text()
        state = (tmp_path / "supervisor.json").read_text()
        assert '"restarts": 1' in state and '"state": "running"' in state

        # The chain is not restarted: it stops the network.
        assert chain.process is not None
        os.kill(chain.process.pid, signal.SIGKILL)
        chain.process.wait()
        with pytest.raises(NodeExited, match="the chain exited unexpectedly"):
            launcher.supervise()
    finally:
        launcher.stop()
    assert not any(p.running for p in launcher.parts)


def test_a_part_that_keeps_dying_is_left_down_with_one_line(tmp_path: Path, fast: None) -> None:
    said: list[str] = []
    launcher = Launcher(LaunchPlan(tmp_path), said.append)
    crasher = launcher._spawn(part(tmp_path, "proxy1", CRASHER, "proxy"))
    steady = launcher._spawn(part(tmp_path, "agent", SLEEPER, "agent"))
    try:
        started = time.monotonic()
        run_until(launcher, lambda: crasher.given_up)
        # Back-off doubles: 0.05 + 0.1 + 0.2 + 0.4 (capped) before the fifth death.
        assert time.monotonic() - started >= 0.7
        assert crasher.restarts == launcher_module.GIVE_UP_DEATHS - 1
        down = [line for line in said if "left down" in line]
        assert len(down) == 1 and "\n" not in down[0]
        assert down[0].startswith("proxy1 died 5 times within 60 s: left down")
        for _ in range(20):  # nothing more happens to it
            launcher.supervise()
        assert crasher.restarts == launcher_module.GIVE_UP_DEATHS - 1 and steady.running
        assert '"state": "down"' in (tmp_path / "supervisor.json").read_text()
    finally:
        launcher.stop()


@pytest.fixture
def dropper() -> Iterator[int]:
    """A port that accepts every connection and closes it unanswered: a part dying
    in the middle of each request."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


@pytest.mark.slow
def test_network_errors_end_in_one_line_never_a_traceback(tmp_path: Path, dropper: int) -> None:
    from datagora.ledger.deployment import CONTRACT_NAMES, DEPLOYMENT_FORMAT

    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAGORA_")}
    env |= {"DATAGORA_PASSWORD": "pw", "DATAGORA_KEYS_DIR": str(tmp_path / "keys")}
    subprocess.run(
        [sys.executable, "-m", "datagora", "account", "new", "--name", "me"],
        env=env, capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    source = tmp_path / "data.csv"
    source.write_text("a,b\n1,2\n")
    commands = {
        "publish": [str(source), "--title", "T", "--price", "1", "--account", "me"],
        "buy": ["1", "--account", "me"],
        "download": ["1", "-o", str(tmp_path / "copy"), "--account", "me"],
    }
    # A refused port ends in one line too (tested elsewhere); the dropper is harder.
    for port, how in ((dropper, "Connection aborted"),):
        url = f"http://127.0.0.1:{port}"
        network = {
            "format": 1, "chain_url": url, "storage": [url], "proxies": [url], "threshold": 1,
            "agent": url, "compute": None, "catalog": url, "state_dir": None,
            "deployment": {
                "chain_id": 31337, "start_block": 0, "deployer": "0x" + "11" * 20,
                "contracts": {name: "0x" + "22" * 20 for name in CONTRACT_NAMES},
                "format": DEPLOYMENT_FORMAT, "compiler": "",
            },
        }  # fmt: skip
        (tmp_path / "network.json").write_text(json.dumps(network))
        for command, args in commands.items():
            result = subprocess.run(
                [sys.executable, "-m", "datagora", command, *args],
                env=env | {"DATAGORA_NETWORK": str(tmp_path / "network.json")},
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, (command, result.stderr)
            assert lines[0].startswith("error: cannot reach the chain") and how in lines[0]
    assert not (tmp_path / "copy").exists()
