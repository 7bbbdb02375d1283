"""The `datagora` command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from datagora.ledger import dev_account
from datagora.ledger.anvil import Anvil
from datagora.ports import free_port
from datagora.sharing.serve import restart_delay
from datagora.testing.sharing import PASSWORD, Network, wait_until

DATAGORA = [sys.executable, "-m", "datagora"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DATAGORA, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = run(
        "chain", "info", "--rpc", "http://127.0.0.1:9", "--deployment", str(tmp_path / "x.json")
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "Traceback" not in result.stderr
    debug = run(
        "--debug",
        "chain",
        "info",
        "--rpc",
        "http://127.0.0.1:9",
        "--deployment",
        str(tmp_path / "x.json"),
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_usage_error_exit_code() -> None:
    result = run("chain", "info", "--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_deploy_and_info_against_anvil(tmp_path: Path) -> None:
    key = "0x" + bytes(dev_account(9).key).hex()
    with Anvil() as node:
        missing = run(
            "chain", "deploy", "--rpc", node.url, cwd=tmp_path, env={"DATAGORA_PRIVATE_KEY": ""}
        )
        assert missing.returncode == 1 and "DATAGORA_PRIVATE_KEY" in missing.stderr
        deployed = run(
            "chain",
            "deploy",
            "--rpc",
            node.url,
            "--out",
            str(tmp_path / "d.json"),
            env={"DATAGORA_PRIVATE_KEY": key},
        )
        assert deployed.returncode == 0, deployed.stderr
        assert key[2:] not in deployed.stdout + deployed.stderr  # the secret is never printed
        info = run(
            "chain", "info", "--rpc", node.url, "--deployment", str(tmp_path / "d.json"), "--json"
        )
        assert info.returncode == 0, info.stderr
        data = json.loads(info.stdout)
        assert data["chain_id"] == 31337 and data["datasets"] == 0
        assert set(data["contracts"]) >= {"Factory", "DataNFT", "MarketToken"}


def test_storage_retention_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    base = ["node", "--roles", "storage", "--port", "7999", "--data", str(tmp_path / "n")]
    for extra, message in (
        (["--require-onchain-record"], "needs --rpc and --deployment"),
        (["--retention-grace", "-1"], "--retention-grace must not be negative"),
    ):
        result = run(*base, *extra)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:")
        assert message in result.stderr
    assert not (tmp_path / "n" / "storage" / "index.sqlite3").exists()


def test_a_proxy_node_with_workers_serves_and_stops(tmp_path: Path) -> None:
    net = Network(tmp_path / "net", proxies=1, threshold=1)
    try:
        port = free_port()
        command = [
            *DATAGORA, "node", "--roles", "proxy", "--port", str(port),
            "--data", str(tmp_path / "node"), "--rpc", net.anvil.url,
            "--deployment", str(net.deployment), "--keys", str(net.keys),
            "--account", net.proxy_ids[0].address, "--workers", "2",
        ]  # fmt: skip
        wrong = run(*command[3:], env={"DATAGORA_PASSWORD": "not it"})
        assert wrong.returncode == 1 and "wrong password" in wrong.stderr
        env = {**os.environ, "DATAGORA_PASSWORD": PASSWORD}
        log = tmp_path / "supervisor.log"
        with open(log, "wb") as out:
            node = subprocess.Popen(command, env=env, start_new_session=True, stderr=out)
        try:
            health = wait_until(
                lambda: _health(f"http://127.0.0.1:{port}"), "the proxy's workers", timeout=60
            )
            assert health["address"] == net.proxy_ids[0].address
            workers = _workers(node.pid)
            assert len(workers) == 2
            # A worker that dies is replaced; the proxy keeps answering.

            def kill_and_replace(victim: str) -> tuple[list[str], str]:
                os.kill(int(victim), signal.SIGKILL)

                def replaced() -> list[str] | None:
                    now = _workers(node.pid)
                    return now if len(now) == 2 and victim not in now else None

                now = wait_until(replaced, "a replacement worker", timeout=60)
                (new,) = set(now) - set(workers)
                return now, new

            workers, newest = kill_and_replace(workers[0])
            # One that dies soon after its start is restarted later each time.
            for _ in range(2):
                workers, newest = kill_and_replace(newest)
            text = log.read_text()
            delays = [float(d) for d in re.findall(r"restarting it in ([0-9.]+) s", text)]
            assert len(delays) == 3 and delays[1] >= 0.5 and delays[2] == 2 * delays[1], text
            wait_until(lambda: _health(f"http://127.0.0.1:{port}"), "the proxy", timeout=60)
            # A second proxy on the same port is refused in one line, not let into the
            # first one's SO_REUSEPORT group.
            taken = run(*command[3:], env={"DATAGORA_PASSWORD": PASSWORD})
            assert taken.returncode != 0
            assert "cannot listen on" in taken.stderr and "in use" in taken.stderr
            assert _workers(node.pid) == workers
        finally:
            node.send_signal(signal.SIGTERM)
            assert node.wait(timeout=30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        net.anvil.stop()


def test_restart_delay_doubles_up_to_a_cap() -> None:
    delays = [restart_delay(n) for n in range(12)]
    assert delays[:5] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 30.0 and restart_delay(10**6) == 30.0
    assert delays == sorted(delays)


def _workers(supervisor: int) -> list[str]:
    return subprocess.run(
        ["pgrep", "-P", str(supervisor), "-f", "datagora.sharing.serve.*--reuse-port"],
        capture_output=True,
        text=True,
    ).stdout.split()


def _health(url: str) -> dict[str, object] | None:
    try:
        return dict(httpx.get(f"{url}/health", timeout=1, trust_env=False).json())
    except httpx.TransportError:
        return None
