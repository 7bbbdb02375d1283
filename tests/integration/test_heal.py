"""The supervisor of `datagora up` on real child processes: a part that exits is
started again (same command, same port) after a back-off, a part that keeps dying
is reported once and left down (the chain's own restart: tests/node/test_chain_journal.py)."""

from __future__ import annotations

import http.server
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
    """A chain that answers ``eth_chainId`` and dies on anything else: every other
    request's connection is closed unanswered (a chain dying mid-operation)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                request = json.loads(body)
            except ValueError:
                request = None
            if isinstance(request, dict) and request.get("method") == "eth_chainId":
                answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": "0x7a69"})
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer.encode())
                return
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join()


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
    url = f"http://127.0.0.1:{dropper}"
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
        assert result.returncode == 1 and len(lines) == 1, (command, result.stderr[-3000:])
        assert lines[0].startswith("error: ") and url in lines[0], lines
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "copy").exists()
