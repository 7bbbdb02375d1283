"""A local sharing network of real processes on loopback, for tests, benchmarks and demos.

:class:`Service` runs ``python -m datagora.sharing.serve`` (a proxy or an agent) with
its own data directory and log file; :class:`Network` starts anvil (or another EVM
node: Hardhat Network), deploys the contracts, writes keystores (low scrypt cost:
development accounts only) and runs m proxies and the owner's agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from eth_account.signers.local import LocalAccount

from datagora.crypto.keys import Identity, import_account
from datagora.ledger import Chain, Ledger, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ledger.chainnode import ChainNode
from datagora.ports import free_port

PASSWORD = "development password, not a secret"
"""Password of the development keystores (their accounts are anvil's public dev keys)."""


def agent_delegations(url: str) -> list[dict[str, Any]]:
    """Every delegation the agent at `url` lists, following its pages."""
    rows: list[dict[str, Any]] = []
    cursor: int | None = 0
    while cursor is not None:
        page = httpx.get(
            f"{url}/delegations", params={"cursor": cursor}, timeout=5, trust_env=False
        ).json()
        rows += page["items"]
        cursor = page["next"]
    return rows


T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 90.0) -> T:
    """Poll `condition` until it returns something truthy (a liveness deadline, not a timing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Service:
    """One `python -m datagora.sharing.serve` process with its own data directory."""

    def __init__(self, role: str, data_dir: Path, args: list[str]) -> None:
        self.role = role
        self.data_dir = data_dir
        self.args = args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "datagora.sharing.serve", "--role", self.role,
            "--port", str(self.port), "--data", str(self.data_dir), *self.args,
        ]  # fmt: skip
        env = {**os.environ, "DATAGORA_PASSWORD": PASSWORD}
        with open(self.data_dir / "process.log", "ab") as log:
            # A session of its own: a proxy with --workers is a supervisor and its
            # worker processes, signalled together.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    def _signal_all(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def wait_ready(self) -> None:
        """Block until ``/health`` answers (or the process exits: AssertionError with its log)."""

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.data_dir / "process.log").read_text()[-2000:]
                raise AssertionError(f"{self.role} exited: {log}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1, trust_env=False).is_success
            except httpx.TransportError:
                return False

        wait_until(up, f"{self.role} on port {self.port}")

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/health", timeout=5, trust_env=False).json())

    def stop(self) -> None:
        """SIGTERM (graceful: the proxy anchors its log once more), then reap."""
        if self.process is None or self.process.poll() is not None:
            return
        self._signal_all(signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._signal_all(signal.SIGKILL)  # any worker left behind

    def pause(self) -> None:
        """SIGSTOP: the process keeps its socket but answers nothing (an unresponsive node)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL to every process of the service: a crash. Returns once its port
        refuses connections (a worker process may outlive the one waited for by a
        moment, and a connection it accepts then is reset rather than refused)."""
        if self.process is not None and self.process.poll() is None:
            self._signal_all(signal.SIGKILL)
            self.process.wait()

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                except ConnectionRefusedError:
                    return True
                except OSError:
                    pass
                return False

            wait_until(refused, f"{self.role} on port {self.port} to be gone", timeout=30)


class Network:
    """anvil (or `node`) + contracts + `proxies` proxy processes + the owner's agent
    (threshold t).

    The agent runs with an agent key of its own, which the owner authorises on chain
    (``AccessRegistry.set_delegate``), and the owner's delegation keys sealed to it:
    it never holds the owner's Ethereum key.
    """

    def __init__(
        self,
        base: Path,
        proxies: int = 3,
        threshold: int = 2,
        poll_interval: float = 0.1,
        proxy_workers: int | Sequence[int] = 1,
        anchor_every: float = 0.5,
        node: ChainNode | None = None,
    ) -> None:
        """``proxy_workers``: worker processes of every proxy, or of each in turn;
        ``node``: the EVM node to start and run on (a new anvil if not given)."""
        counts = (
            [proxy_workers] * proxies if isinstance(proxy_workers, int) else list(proxy_workers)
        )
        if len(counts) != proxies:
            raise ValueError(f"{len(counts)} worker counts for {proxies} proxies")
        self.base = base
        self.threshold = threshold
        self.node = (node or Anvil()).start()
        self.ledger = Ledger.deploy(Chain.rpc(self.node.url), dev_account(0))
        self.deployment = base / "deployment.json"
        self.ledger.deployment.save(self.deployment)
        self.keys = base / "keys"
        self.owner = self._account(dev_account(1))
        self.agent_id = self._account(Identity.generate().account)
        self.ledger.access.set_delegate(self.owner.account, self.agent_id.address, True)
        self.delegation_file = base / "delegation-keys.json"
        self.delegation_file.write_text(
            json.dumps(self.owner.delegation_keys().seal(self.agent_id.umbral_public_key))
        )
        self.proxy_ids = [self._account(dev_account(5 + i)) for i in range(proxies)]
        common = ["--rpc", self.node.url, "--deployment", str(self.deployment), "--keys"]
        self.proxies = [
            Service(
                "proxy",
                base / f"proxy{i}",
                [
                    *common,
                    str(self.keys),
                    "--account",
                    ident.address,
                    "--anchor-every",
                    str(anchor_every),
                    "--workers",
                    str(count),
                ],
            )
            for i, (ident, count) in enumerate(zip(self.proxy_ids, counts, strict=True))
        ]
        self.agent = Service(
            "agent",
            base / "agent",
            [
                *common, str(self.keys), "--account", self.agent_id.address,
                "--delegation", str(self.delegation_file), "--threshold", str(threshold),
                "--poll-interval", str(poll_interval),
                *[a for p in self.proxies for a in ("--proxy", p.url)],
            ],
        )  # fmt: skip

    def _account(self, account: LocalAccount) -> Identity:
        return import_account(self.keys, account.key.hex(), PASSWORD, scrypt_n=2**4)

    @property
    def anvil(self) -> ChainNode:
        """The chain node (the name from when it was always anvil)."""
        return self.node

    @property
    def proxy_urls(self) -> list[str]:
        return [p.url for p in self.proxies]

    def start(self) -> Network:
        for service in [*self.proxies, self.agent]:
            service.start()
        for service in [*self.proxies, self.agent]:
            service.wait_ready()
        return self

    def stop(self) -> None:
        for service in [self.agent, *self.proxies]:
            service.stop()
        self.node.stop()

    def delegated(self, dataset: int, consumer: str, version: int | None = None) -> bool:
        rows = agent_delegations(self.agent.url)
        return any(
            r["dataset"] == dataset
            and r["consumer"] == consumer
            and (version is None or r["version"] == version)
            and len(r["accepted"]) >= self.threshold
            for r in rows
        )

    def agent_caught_up(self) -> bool:
        return int(self.agent.health()["cursor"]) > self.ledger.chain.block_number
