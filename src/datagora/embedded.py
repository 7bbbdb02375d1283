"""A whole datagora network in one Python process, for a notebook: ``connect(embedded=True)``.

An embedded EVM (py-evm) with the contracts deployed, six storage nodes, three
proxies (2-of-3) and a catalog, each a real HTTP server on a loopback port in a
thread. Every account that publishes gets its own agent (automatic delegation
after an order) and compute node (compute-to-data on what it published), started
on its first publish. Nothing is installed or configured; :meth:`close` (or leaving
the ``with`` block) stops every server and removes the temporary files.

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
from types import TracebackType
from typing import Any, Final

from datagora.crypto.keys import Identity
from datagora.errors import ConfigError
from datagora.ledger import Ledger, dev_account
from datagora.market import Endpoints
from datagora.node.inprocess import ServerGroup, ThreadServer
from datagora.sdk import Market

__all__ = ["EmbeddedMarket", "EmbeddedNetwork"]

STORAGE_NODES: Final = 6
PROXIES: Final = 3
THRESHOLD: Final = 2
_PROXY_ACCOUNTS: Final = (7, 8, 9)  # development accounts that sign the proxies' anchors
_MAX_SHARE: Final = 64 << 20
_USER_ACCOUNTS: Final = range(1, 7)
_STARTING_TOKENS: Final = 1_000 * 10**18


def dev_identity(index: int) -> Identity:
    """Development account `index` (0-9) as an identity."""
    if not 0 <= index < 10:
        raise ConfigError(f"the embedded network has development accounts 0-9, not {index}")
    return Identity.from_private_key(bytes(dev_account(index).key))


class EmbeddedNetwork:
    """The chain and the nodes; one per :func:`datagora.connect` ``(embedded=True)``."""

    def __init__(self, base: Path | None = None, *, poll_interval: float = 0.1) -> None:
        self._own_dir = base is None
        self.base = Path(tempfile.mkdtemp(prefix="datagora-embedded-")) if base is None else base
        self.poll_interval = poll_interval
        self.servers = ServerGroup()
        self._lock = threading.Lock()
        self._owners: dict[str, tuple[ThreadServer, ThreadServer]] = {}
        try:
            self.ledger = Ledger.embedded()
            # Every user account starts with market tokens to buy with (development).
            for index in _USER_ACCOUNTS:
                self.ledger.market_token.mint(
                    dev_account(0), dev_account(index).address, _STARTING_TOKENS
                )
            self.storage = [
                self.servers.start(
                    partial(_storage_app, self.base / f"storage{i}"), f"storage-{i}"
                ).url
                for i in range(STORAGE_NODES)
            ]
            self.proxies = [
                self.servers.start(
                    partial(_proxy_app, self.ledger, dev_identity(a), self.base / f"proxy{i}"),
                    f"proxy-{i}",
                ).url
                for i, a in enumerate(_PROXY_ACCOUNTS)
            ]
            self.catalog = self.servers.start(
                partial(
                    _catalog_app, self.ledger, self.base / "catalog", self.storage, poll_interval
                ),
                "catalog",
            ).url
        except BaseException:
            self.close()
            raise

    def market(self, account: int | Identity = 1) -> EmbeddedMarket:
        """The network as seen by `account` (a development account number or an identity)."""
        identity = dev_identity(account) if isinstance(account, int) else account
        endpoints = Endpoints(self.storage, self.proxies, THRESHOLD, self.catalog)
        return EmbeddedMarket(self.ledger, endpoints, identity, self)

    def serve_owner(self, owner: Identity) -> str:
        """Start `owner`'s agent and compute node unless running; the compute node's URL."""
        with self._lock:
            running = self._owners.get(owner.address)
            if running is None:
                tag = owner.address[2:10].lower()
                agent = self.servers.start(
                    partial(
                        _agent_app, self.ledger, owner, self.proxies, self.base / f"agent-{tag}",
                        self.poll_interval,
                    ),
                    f"agent-{tag}",
                )  # fmt: skip
                compute = self.servers.start(
                    partial(
                        _compute_app, self.ledger, owner, self.storage, self.base / f"compute-{tag}"
                    ),
                    f"compute-{tag}",
                )
                running = self._owners[owner.address] = (agent, compute)
            return running[1].url

    def compute_node(self, dataset: int) -> str:
        """The compute node of `dataset`'s owner (started if it was not)."""
        controller = self.ledger.data_nft.controller(dataset)
        with self._lock:
            running = self._owners.get(controller)
        if running is None:
            raise ConfigError(
                f"dataset {dataset}'s owner {controller} runs no compute node in this network"
            )
        return running[1].url

    def close(self) -> None:
        """Stop every server and remove the temporary files."""
        self.servers.stop()
        if self._own_dir:
            shutil.rmtree(self.base, ignore_errors=True)


class EmbeddedMarket(Market):
    """A :class:`~datagora.sdk.Market` on an :class:`EmbeddedNetwork`; a context manager."""

    def __init__(
        self,
        ledger: Ledger,
        endpoints: Endpoints,
        identity: Identity,
        network: EmbeddedNetwork,
    ) -> None:
        super().__init__(ledger, endpoints, identity)
        self.network = network

    def account(self, index: int | Identity) -> EmbeddedMarket:
        """Another account's view of the same network (development account `index`)."""
        return self.network.market(index)

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`Marketplace.publish`; starts this owner's agent and compute node first."""
        self.network.serve_owner(self.identity)
        return super().publish(*args, **kwargs)

    def compute(self, dataset: int, *args: Any, node: str | None = None, **kwargs: Any) -> Any:
        return super().compute(
            dataset, *args, node=node or self.network.compute_node(dataset), **kwargs
        )

    def job(self, job: int, node: str | None = None) -> Any:
        dataset = self.ledger.compute.job(job).dataset
        return super().job(job, node or self.network.compute_node(dataset))

    def train(
        self, datasets: Any, *args: Any, nodes: dict[int, str] | None = None, **kwargs: Any
    ) -> Any:
        routes = {d: self.network.compute_node(d) for d in datasets} | (nodes or {})
        return super().train(datasets, *args, nodes=routes, **kwargs)

    def close(self) -> None:
        """Stop the whole embedded network (every account's view of it)."""
        self.network.close()

    def __enter__(self) -> EmbeddedMarket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# The apps, built afresh at each start of their server.


def _storage_app(data_dir: Path) -> Any:
    from datagora.storage.node import create_storage_app

    return create_storage_app(data_dir, _MAX_SHARE)


def _proxy_app(ledger: Ledger, identity: Identity, data_dir: Path) -> Any:
    from datagora.sharing.proxy import create_proxy_app

    return create_proxy_app(ledger, identity, data_dir)


def _agent_app(
    ledger: Ledger, owner: Identity, proxies: list[str], data_dir: Path, poll: float
) -> Any:
    from datagora.sharing.agent import create_agent_app

    return create_agent_app(ledger, owner, proxies, THRESHOLD, data_dir, poll)


def _compute_app(ledger: Ledger, owner: Identity, storage: list[str], data_dir: Path) -> Any:
    from datagora.compute.node import create_compute_app
    from datagora.compute.stored import StoredDatasets

    stored = StoredDatasets(ledger, owner, storage)
    return create_compute_app(ledger, owner, {}, data_dir, stored=stored)


def _catalog_app(ledger: Ledger, data_dir: Path, storage: list[str], poll: float) -> Any:
    from datagora.catalog.api import create_catalog_app
    from datagora.catalog.db import Database
    from datagora.catalog.indexer import Indexer
    from datagora.catalog.resolver import MetadataResolver

    data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(f"sqlite:///{(data_dir / 'catalog.db').resolve()}")
    return create_catalog_app(Indexer(ledger, database, MetadataResolver(storage)), poll)
