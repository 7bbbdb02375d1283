"""A whole datagora network in one Python process, for a notebook: ``connect(embedded=True)``.

An embedded EVM (py-evm) with the contracts deployed, six storage nodes, three
proxies (2-of-3) and a catalog, each a real HTTP server on a loopback port in a
thread; the storage nodes and proxies are registered (and staked) in the chain's
NodeRegistry, each with its own development account. Every account that publishes
gets its own agent (automatic delegation after an order), started on its first
publish, and its own compute node
(compute-to-data on what it published), started only when compute is first used
on one of its datasets: publishing and buying work wherever Python runs, and a
machine that cannot sandbox jobs says so when compute is asked for. Nothing is
installed or configured; :meth:`close` stops every server and removes the temporary
files.

:meth:`EmbeddedNetwork.endpoints` are what a market reaches the network by: with a
compute node per dataset (its owner's, started on first use) and a hook that starts
an owner's agent on first publish. The SDK wraps them in a :class:`datagora.sdk.Market`
that owns the network (``with`` closes it; ``.account(n)`` is another account's view).

The accounts are the chain's development accounts (anvil's well-known keys);
accounts 1-6 start with 1,000 market tokens each. Development only, never for a
real network.

>>> import datagora as dg
>>> with dg.connect(embedded=True) as owner:                 # dev account 1
...     researcher = owner.account(2)                        # same network, account 2
...     ds = owner.publish("cohort.csv", {"title": "Cohort", "license": "CC-BY-4.0",
...                        "creator": "me"}, price=10**18)
...     researcher.dataset(ds.dataset).buy_and_order()
...     frame = researcher.dataset(ds.dataset).to_pandas()
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Final

from datagora.crypto.keys import Identity
from datagora.errors import ConfigError
from datagora.ledger import Ledger, Role, dev_account
from datagora.market import Endpoints
from datagora.node.apps import agent_app, catalog_app, compute_app, proxy_app, storage_app
from datagora.node.connect import dev_identity
from datagora.node.inprocess import ServerGroup, ThreadServer
from datagora.node.network import STARTING_TOKENS, STORAGE_NODES, THRESHOLD, dev_grants
from datagora.node.registration import STORAGE_ACCOUNT_BASE, DevNode, register_dev_nodes

__all__ = ["EmbeddedNetwork"]

_PROXY_ACCOUNTS: Final = (7, 8, 9)  # development accounts that sign the proxies' anchors
_MAX_SHARE: Final = 64 << 20
_USER_ACCOUNTS: Final = range(1, 7)


class EmbeddedNetwork:
    """The chain and the nodes; one per :func:`datagora.connect` ``(embedded=True)``."""

    def __init__(self, base: Path | None = None, *, poll_interval: float = 0.1) -> None:
        self._own_dir = base is None
        self.base = Path(tempfile.mkdtemp(prefix="datagora-embedded-")) if base is None else base
        self.poll_interval = poll_interval
        self.servers = ServerGroup()
        self._lock = threading.Lock()
        self._owners: dict[str, Identity] = {}
        self._agents: dict[str, ThreadServer] = {}
        self._computes: dict[str, ThreadServer] = {}
        try:
            self.ledger = Ledger.embedded()
            # Every user account starts with market tokens to buy with (development).
            for index in _USER_ACCOUNTS:
                self.ledger.market_token.mint(
                    dev_account(0), dev_account(index).address, STARTING_TOKENS
                )
            # Each server builds its app afresh at every start (see ThreadServer).
            self.storage = [
                self.servers.start(
                    partial(
                        storage_app,
                        self.base / f"storage{i}",
                        _MAX_SHARE,
                        ledger=self.ledger,
                        grants=dev_grants(),  # every development account may write
                    ),
                    f"storage-{i}",
                ).url
                for i in range(STORAGE_NODES)
            ]
            self.proxies = [
                self.servers.start(
                    partial(proxy_app, self.ledger, dev_identity(a), self.base / f"proxy{i}"),
                    f"proxy-{i}",
                ).url
                for i, a in enumerate(_PROXY_ACCOUNTS)
            ]
            # Each node registers with its own development account and stake, so
            # `datagora node list` and registry discovery see this network's nodes.
            register_dev_nodes(
                self.ledger,
                [
                    DevNode(dev_account(STORAGE_ACCOUNT_BASE + i), Role.STORAGE, url)
                    for i, url in enumerate(self.storage)
                ]
                + [
                    DevNode(dev_account(a), Role.PROXY, url, dev_identity(a).umbral_public_key)
                    for a, url in zip(_PROXY_ACCOUNTS, self.proxies, strict=True)
                ],
            )
            self.catalog = self.servers.start(
                partial(
                    catalog_app,
                    self.ledger,
                    self.base / "catalog",
                    self.storage,
                    poll_interval,
                    allow_private_metadata=True,  # every node here is on loopback
                ),
                "catalog",
            ).url
        except BaseException:
            self.close()
            raise

    @property
    def endpoints(self) -> Endpoints:
        """The network's nodes; a dataset's compute node is its owner's, started (with
        the owner's agent) on the owner's first publish."""
        return Endpoints(
            self.storage,
            self.proxies,
            THRESHOLD,
            self.catalog,
            compute_router=self.compute_node,
            on_publish=self.serve_owner,
        )

    def serve_owner(self, owner: Identity) -> str:
        """Start `owner`'s agent unless running (its compute node starts on first use);
        the agent's URL."""
        with self._lock:
            self._owners[owner.address] = owner
            agent = self._agents.get(owner.address)
            if agent is None:
                tag = owner.address[2:10].lower()
                # The agent signs with a key of its own, authorised on chain to delegate
                # fragments for the owner and nothing else; it holds the owner's
                # delegation keys, never the owner's Ethereum key.
                agent_key = Identity.generate()
                self.ledger.access.set_delegate(owner.account, agent_key.address, True)
                agent = self._agents[owner.address] = self.servers.start(
                    partial(
                        agent_app, self.ledger, agent_key, self.proxies, THRESHOLD,
                        self.base / f"agent-{tag}", self.poll_interval,
                        keys=owner.delegation_keys(),
                    ),
                    f"agent-{tag}",
                )  # fmt: skip
            return agent.url

    def compute_node(self, dataset: int) -> str:
        """The compute node of `dataset`'s owner, started on first use. If this machine
        cannot sandbox jobs, the error says why (and nothing else stops working)."""
        controller = self.ledger.data_nft.controller(dataset)
        with self._lock:
            owner = self._owners.get(controller)
            if owner is None:
                raise ConfigError(
                    f"dataset {dataset}'s owner {controller} runs no compute node in this "
                    "network (only accounts that published here do)"
                )
            compute = self._computes.get(controller)
            if compute is None:
                tag = controller[2:10].lower()
                compute = self._computes[controller] = self.servers.start(
                    partial(
                        compute_app,
                        self.ledger,
                        owner,
                        self.base / f"compute-{tag}",
                        storage=self.storage,
                    ),
                    f"compute-{tag}",
                )
            return compute.url

    def close(self) -> None:
        """Stop every server and remove the temporary files."""
        self.servers.stop()
        if self._own_dir:
            shutil.rmtree(self.base, ignore_errors=True)
