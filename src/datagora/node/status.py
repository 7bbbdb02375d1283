"""`datagora status`: is every part of a network answering?

The chain must answer with the deployment's chain id and still hold its contracts;
every node must answer ``GET /health``. Parts are named as `datagora up` names
them: chain, storage1..n, proxy1..m, agent, compute, catalog. For a network a
running `datagora up` supervises, each part also says how often it was restarted
(and whether it was left down after dying too often).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from datagora.ledger import jsonrpc
from datagora.ledger.errors import ChainError
from datagora.node.connect import node_urls
from datagora.node.errors import NetworkDown
from datagora.node.network import Network

__all__ = [
    "NetworkDown",
    "PartStatus",
    "check_network",
    "check_node",
    "network_parts",
    "supervised",
]

TIMEOUT = 5.0


@dataclass(frozen=True)
class PartStatus:
    """One part's health: ``ok`` and a short human detail."""

    part: str
    url: str
    ok: bool
    detail: str
    restarts: int | None = None
    """Restarts by `datagora up`'s supervisor (None when no `up` supervises it)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def network_parts(net: Network) -> list[tuple[str, str]]:
    """(name, URL) of every part, chain first: the network file's, and the storage
    nodes, proxies and compute node it does not list from the NodeRegistry."""
    storage, proxies, compute = node_urls(net)
    parts = [("chain", net.chain_url)]
    parts += [(f"storage{i + 1}", url) for i, url in enumerate(storage)]
    parts += [(f"proxy{i + 1}", url) for i, url in enumerate(proxies)]
    for name, url in (
        ("agent", net.agent), ("compute", compute), ("catalog", net.catalog), ("web", net.web),
    ):  # fmt: skip
        if url:
            parts.append((name, url))
    return parts


def _check_chain(net: Network) -> PartStatus:
    url = net.chain_url
    try:
        with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
            chain_id = int(jsonrpc.call(url, "eth_chainId", [], client=client), 16)
            block = int(jsonrpc.call(url, "eth_blockNumber", [], client=client), 16)
            if chain_id != net.deployment.chain_id:
                return PartStatus(
                    "chain", url, False,
                    f"chain id {chain_id}, but the deployment is for {net.deployment.chain_id}",
                )  # fmt: skip
            missing = [
                name
                for name, address in sorted(net.deployment.contracts.items())
                if jsonrpc.call(url, "eth_getCode", [address, "latest"], client=client)
                in ("0x", "0x0", "")
            ]
    except (httpx.HTTPError, ChainError, ValueError, TypeError) as exc:
        return PartStatus("chain", url, False, _reason(exc))
    if missing:
        return PartStatus("chain", url, False, f"no code for {', '.join(missing)}: redeploy")
    return PartStatus("chain", url, True, f"chain id {chain_id}, block {block}, contracts deployed")


def _detail(health: Any) -> str:
    if not isinstance(health, dict):
        return "healthy"
    keys = (
        "role", "address", "operator", "cursor", "indexed_block", "lag_blocks", "datasets",
        "shares", "fragments", "isolation", "error",
    )  # fmt: skip
    shown = [
        f"{k} {health[k]}"
        for k in keys
        if health.get(k) is not None and not isinstance(health[k], (dict, list))
    ]
    return ", ".join(shown) or "healthy"


def check_node(name: str, url: str) -> PartStatus:
    """One node's health: its ``GET /health`` answered 200 (with what it says), or why not."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/health", timeout=TIMEOUT, trust_env=False)
    except httpx.HTTPError as exc:
        return PartStatus(name, url, False, _reason(exc))
    try:
        health = r.json()
    except ValueError:
        health = None
    if r.status_code != 200:
        # An unhealthy node (a catalog whose indexer stalled or died) says why.
        why = ""
        if isinstance(health, dict):
            why = ", ".join(str(health[k]) for k in ("status", "error") if health.get(k))
        return PartStatus(
            name, url, False, f"/health answered {r.status_code}" + (f": {why}" if why else "")
        )
    return PartStatus(name, url, True, _detail(health))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "not answering (connection refused)"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {TIMEOUT:.0f} s"
    return f"{type(exc).__name__}: {exc}"


def supervised(net: Network) -> dict[str, dict[str, Any]]:
    """What a running `datagora up` reports of each part (DIR/supervisor.json), or {}."""
    if not net.state_dir:
        return {}
    try:
        data = json.loads((Path(net.state_dir) / "supervisor.json").read_text())
        pid = data["up_pid"]
        if not isinstance(pid, int) or pid <= 0:
            return {}
        os.kill(pid, 0)  # a file left by an `up` that was killed says nothing
        parts = data["parts"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return (
        {k: v for k, v in parts.items() if isinstance(v, dict)} if isinstance(parts, dict) else {}
    )


def _with_restarts(status: PartStatus, info: dict[str, Any] | None) -> PartStatus:
    if info is None or not isinstance(info.get("restarts"), int):
        return status
    restarts: int = info["restarts"]
    detail = status.detail
    if info.get("state") == "down":
        detail += f"; left down by `up` after dying too often (last exit {info.get('last_exit')})"
    elif info.get("state") == "restarting":
        detail += f"; restarting (last exit {info.get('last_exit')})"
    if restarts:
        detail += f"; restarted {restarts} time{'s' if restarts != 1 else ''}"
    return replace(status, detail=detail, restarts=restarts)


def check_network(net: Network) -> list[PartStatus]:
    """The health of every part of `net`, in the network file's order (checked in parallel)."""
    parts = network_parts(net)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(_check_chain, net)
            if name == "chain"
            else pool.submit(check_node, name, url)
            for name, url in parts
        ]
        results = [f.result() for f in futures]
    restarts = supervised(net)
    return [_with_restarts(r, restarts.get(r.part)) for r in results]
