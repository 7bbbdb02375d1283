"""The role apps, built the same way whichever process model serves them.

`datagora node` (and so `datagora up`, which runs one such process per node), the
embedded network and the demo serve these apps: a node in a child process and a node
in a thread of this process differ only in how they are run. Each factory imports its
role where it is called, so a storage node does not pay for web3 at start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from datagora.compute.jobs import ComputeDataset
    from datagora.compute.stored import StoredDatasets
    from datagora.crypto.keys import DelegationKeys, Identity
    from datagora.ledger import Ledger
    from datagora.storage.auth import QuotaSource
    from datagora.storage.retention import Retention

__all__ = [
    "agent_app",
    "catalog_app",
    "compute_app",
    "load_request_types",
    "proxy_app",
    "storage_app",
    "stored_datasets",
]


def load_request_types() -> None:
    """Register every layer's signed-request types in this process.

    A service parses requests by their registered type; with every type known, a
    request meant for another service is refused as unexpected (the answer it got
    when one module defined them all), not as malformed.
    """
    import datagora.compute.requests
    import datagora.sharing.requests
    import datagora.storage.auth  # noqa: F401


def storage_app(
    data_dir: Path,
    max_share: int,
    retention: Retention | None = None,
    *,
    ledger: Ledger | None = None,
    chain_id: int | None = None,
    public_urls: Sequence[str] = (),
    known_nodes: Sequence[str] = (),
    grants: Mapping[str, int] | None = None,
    quota_sources: Sequence[QuotaSource] = (),
) -> FastAPI:
    """A storage node keeping its shares under `data_dir`.

    Writes are signed by accounts with a quota (`grants` are set at start: a
    development network's accounts). With a `ledger` the node signs for its chain
    and checks placement records against the datasets' controllers; `public_urls`
    are the URLs writes must name (default: the one each request was sent to);
    `known_nodes`, if any, the storage nodes a placement record may name;
    `quota_sources` grant quota beyond the operator's (e.g. paid storage deals)."""
    from datagora.crypto.nonces import FileNonceStore
    from datagora.storage.auth import DEFAULT_CHAIN_ID, QuotaBook, WritePolicy
    from datagora.storage.node import create_storage_app

    quotas = QuotaBook.in_dir(data_dir, quota_sources)
    for account, amount in (grants or {}).items():
        quotas.grant(account, amount)
    controllers = None
    if ledger is not None:
        from datagora.storage.controllers import LedgerControllers

        controllers = LedgerControllers(ledger)
        chain_id = ledger.chain.chain_id
    known = [n.rstrip("/") for n in known_nodes]
    policy = WritePolicy(
        quotas,
        FileNonceStore(data_dir / "nonces.dat"),
        chain_id or DEFAULT_CHAIN_ID,
        public_urls=list(public_urls) or None,
        known_nodes=(lambda: known) if known else None,
        controllers=controllers,
    )
    return create_storage_app(data_dir, max_share, retention=retention, policy=policy)


def proxy_app(
    ledger: Ledger, identity: Identity, data_dir: Path, anchor_every: float = 60.0
) -> FastAPI:
    """A proxy acting as `identity`."""
    from datagora.sharing.proxy import create_proxy_app

    load_request_types()

    return create_proxy_app(ledger, identity, data_dir, anchor_every)


def agent_app(
    ledger: Ledger,
    owner: Identity,
    proxies: list[str],
    threshold: int,
    data_dir: Path,
    poll_interval: float,
    *,
    keys: DelegationKeys | None = None,
) -> FastAPI:
    """An owner's agent: delegates to `threshold`-of-`proxies` after each order. `owner`
    is the account it signs with: an authorised agent key with `keys` (the owner's
    delegation keys), else the owner itself."""
    from datagora.sharing.agent import create_agent_app

    load_request_types()

    return create_agent_app(ledger, owner, proxies, threshold, data_dir, poll_interval, keys=keys)


def stored_datasets(
    ledger: Ledger, operator: Identity, storage: list[str], epsilon_budget: float = 3.0
) -> StoredDatasets:
    """Every dataset `operator` published, read from the `storage` nodes (the market's
    :class:`~datagora.market.compute.OwnerDatasets` as the compute node's source)."""
    from datagora.compute.stored import StoredDatasets
    from datagora.market.compute import OwnerDatasets

    source = OwnerDatasets(ledger, operator, storage)
    return StoredDatasets(ledger, operator, source, epsilon_budget=epsilon_budget)


def compute_app(
    ledger: Ledger,
    operator: Identity,
    data_dir: Path,
    *,
    storage: list[str] | None = None,
    datasets: Mapping[int, ComputeDataset | Path | str] | None = None,
    epsilon_budget: float = 3.0,
    allow_weak_sandbox: bool = False,
    owner_token: str | None = None,
    chain_lock: Any = None,
    max_jobs_per_dataset: int | None = None,
    max_jobs_per_consumer: int | None = None,
) -> FastAPI:
    """`operator`'s compute node: the `datasets` files, and with `storage` nodes every
    dataset the operator published (fetched and decrypted per job). The job caps
    default to the compute node's (:mod:`datagora.compute.jobs`)."""
    from datagora.compute.jobs import MAX_JOBS_PER_CONSUMER, MAX_JOBS_PER_DATASET
    from datagora.compute.node import create_compute_app

    load_request_types()

    stored = stored_datasets(ledger, operator, storage, epsilon_budget) if storage else None
    return create_compute_app(
        ledger,
        operator,
        datasets or {},
        data_dir,
        allow_weak_sandbox=allow_weak_sandbox,
        owner_token=owner_token,
        chain_lock=chain_lock,
        stored=stored,
        max_jobs_per_dataset=max_jobs_per_dataset or MAX_JOBS_PER_DATASET,
        max_jobs_per_consumer=max_jobs_per_consumer or MAX_JOBS_PER_CONSUMER,
    )


def catalog_app(
    ledger: Ledger,
    data_dir: Path,
    storage: list[str],
    poll_interval: float,
    *,
    database: str | None = None,
    confirmations: int = 0,
    allow_private_metadata: bool = False,
) -> FastAPI:
    """A catalog indexing `ledger` into `database` (default: SQLite under `data_dir`),
    reading metadata from the `storage` nodes and from http(s) URIs on public hosts
    (on private and loopback ones too with `allow_private_metadata`: a development
    network)."""
    from datagora.catalog.api import create_catalog_app
    from datagora.catalog.db import Database
    from datagora.catalog.indexer import Indexer
    from datagora.catalog.resolver import MetadataResolver

    data_dir.mkdir(parents=True, exist_ok=True)
    url = database or f"sqlite:///{(data_dir / 'catalog.db').resolve()}"
    resolver = MetadataResolver(storage, allow_private=allow_private_metadata)
    indexer = Indexer(ledger, Database(url), resolver, confirmations=confirmations)
    return create_catalog_app(indexer, poll_interval)
