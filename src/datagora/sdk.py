"""The data scientist's entry point: ``dg.connect()``.

>>> import datagora as dg
>>> market = dg.connect()                      # the network `datagora up` started
>>> hits = market.search("breast cancer")      # the catalog
>>> market.buy_and_order(hits[0]["id"]); df = market.to_pandas(hits[0]["id"])
>>> job = market.compute(3, "train.py", {"target": "label"})   # compute-to-data
>>> job.wait(); job.result("results/")          # wait() returns at once if the owner reviews
>>> model = market.train([1, 2, 3], target="label", rounds=3)  # federated (FedAvg)
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from datagora.crypto.keys import Identity, PublicIdentity
from datagora.errors import ConfigError, Unreachable
from datagora.ledger import EscrowRecord, Ledger
from datagora.market import Endpoints, Marketplace, discover
from datagora.node.connect import (
    dev_identity,
    has_account,
    marketplace_for,
    open_identity,
)
from datagora.node.network import load_network

if TYPE_CHECKING:
    from datagora.compute.client import ComputeClient
    from datagora.compute.federated import FederatedModel
    from datagora.ledger.deals import DealTerms
    from datagora.market.compute import Job as MarketJob
    from datagora.market.compute import OwnerClient
    from datagora.node.embedded import EmbeddedNetwork
    from datagora.node.faucet import Funded
    from datagora.torchdata import TabularDataset

__all__ = ["Dataset", "Job", "Market", "connect"]

_FINISHED = ("succeeded", "failed", "denied", "cancelled")


class Job:
    """A compute job you submitted (see :meth:`Market.compute`): follow it, read its logs
    and its result (decrypted for you alone)."""

    def __init__(self, handle: MarketJob) -> None:
        self._handle = handle

    def __repr__(self) -> str:
        return f"<Job {self.job} on dataset {self.dataset}>"

    @property
    def job(self) -> int:
        """The job id (on chain and at the node)."""
        return self._handle.job

    @property
    def dataset(self) -> int:
        return self._handle.dataset

    @property
    def client(self) -> ComputeClient:
        return self._handle.client

    def status(self) -> dict[str, Any]:
        """The node's view of the job (``state``: pending, queued, running, succeeded,
        failed, denied; ``reason``; ``result_hash``; ``epsilon``)."""
        return self._handle.status()

    def wait(self, timeout: float = 300.0, *, through_review: bool = False) -> dict[str, Any]:
        """Wait until the job has finished (succeeded, failed or denied), at most
        `timeout` seconds (then :class:`~datagora.compute.errors.ComputeError`), and
        return its status. A job waiting for its owner's review (``pending``) is returned
        at once, as the CLI does: a person decides, maybe days later. With
        `through_review`, wait through the review too (still at most `timeout`)."""
        until = _FINISHED if through_review else (*_FINISHED, "pending")
        return self.client.wait(self.job, timeout, until)

    def logs(self) -> str:
        """The job's stdout and stderr (capped; withheld if they reproduce input rows)."""
        return self._handle.logs()

    def cancel(self) -> dict[str, Any]:
        """Withdraw the job while it waits for review or in the queue (not once it runs);
        a job paid through the escrow is refunded on chain. Its new status."""
        return self._handle.cancel()

    def escrow(self) -> EscrowRecord | None:
        """The escrow that pays for the job (None: paid by an order): its ``state`` (locked,
        paid, refunded), ``amount`` and ``deadline``."""
        ledger = self._handle.market.ledger
        escrow = ledger.compute.job_escrow(self.job)
        return ledger.compute.escrow(escrow) if escrow else None

    def reclaim(self) -> EscrowRecord | None:
        """After the escrow's deadline, with the job still unsettled: take the money back
        (the job is cancelled on chain). Its escrow, refunded."""
        ledger = self._handle.market.ledger
        escrow = ledger.compute.job_escrow(self.job)
        if not escrow:
            return None
        ledger.compute.reclaim(self._handle.market.identity.account, escrow)
        return ledger.compute.escrow(escrow)

    def result(self, dest: str | Path | None = None) -> bytes:
        """The decrypted result archive (tar); unpacked into `dest` if given. The sealed
        result is checked against the result hash recorded on chain first."""
        return self._handle.result(dest)

    def files(self, dest: str | Path) -> list[Path]:
        """The result unpacked into `dest`; the files written."""
        return self._handle.files(dest)


class Market(Marketplace):
    """A :class:`Marketplace` with the catalog and pandas conveniences; a context manager.

    A market on an embedded network (``connect(embedded=True)``) owns that network:
    :meth:`close` (or leaving the ``with`` block) stops it, and :meth:`account` gives
    another development account's view of it.
    """

    def __init__(
        self,
        ledger: Ledger,
        endpoints: Endpoints,
        identity: Identity | None,
        network: EmbeddedNetwork | None = None,
    ) -> None:
        super().__init__(ledger, endpoints, identity)
        self.network = network

    def account(self, index: int | Identity) -> Market:
        """Another account's view of the same embedded network (development account
        `index`, or an identity)."""
        if self.network is None:
            raise ConfigError("account(...) is for an embedded network: connect as that account")
        identity = dev_identity(index) if isinstance(index, int) else index
        return Market(self.ledger, self.network.endpoints, identity, self.network)

    def close(self) -> None:
        """Stop the embedded network (every account's view of it); nothing otherwise."""
        if self.network is not None:
            self.network.close()

    def __enter__(self) -> Market:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def search(self, q: str = "", **filters: Any) -> list[dict[str, Any]]:
        """Datasets matching `q` (word prefixes) and filters (tag, license, owner, service,
        has_mock, sort, limit, offset; ``min_price``/``max_price`` in base units, like
        every amount of the SDK and the items' ``price``)."""
        from datagora.display import format_amount

        if not self.endpoints.catalog:
            raise ConfigError("this network has no catalog")
        for name in ("min_price", "max_price"):
            if filters.get(name) is not None:  # the catalog's API takes tokens
                filters[name] = format_amount(int(filters[name]), None)
        url = self.endpoints.catalog.rstrip("/")
        try:
            r = httpx.get(f"{url}/datasets", params={"q": q, **filters}, timeout=10)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach the catalog at {url}: {exc}", url) from None
        if r.status_code != 200:
            raise ConfigError(f"the catalog refused the search: {r.text}")
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def to_pandas(self, dataset: int) -> Any:
        """The dataset as a pandas DataFrame (CSV or Parquet), downloaded and verified."""
        import pandas as pd

        data = self.read_bytes(dataset)
        if data[:4] == b"PAR1":
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))

    def to_numpy(self, dataset: int) -> Any:
        """The dataset as a NumPy array (via :meth:`to_pandas`)."""
        return self.to_pandas(dataset).to_numpy()

    def to_torch(
        self, dataset: int, target: str | None = None, features: Sequence[str] | None = None
    ) -> TabularDataset:
        """The dataset as a PyTorch ``Dataset`` of ``(features, target)`` tensors (needs
        PyTorch's CPU build, see the README); see :class:`datagora.torchdata.TabularDataset`."""
        from datagora.torchdata import TabularDataset

        return TabularDataset(self.to_pandas(dataset), target, features)

    def dataset(self, dataset: int) -> Dataset:
        """A handle on one dataset: ``.info``, ``.metadata()``, ``.buy_and_order()``,
        ``.to_pandas()``, ``.to_numpy()``, ``.to_torch()``, ``.compute()``.

        >>> ds = net.dataset(3)
        >>> ds.buy_and_order(); frame = ds.to_pandas()
        """
        self.dataset_info(dataset)  # a clear error now if there is no such dataset
        return Dataset(self, dataset)

    def compute(
        self,
        dataset: int,
        algorithm: str | Path,
        params: dict[str, Any] | None = None,
        *,
        node: str | None = None,
        max_price: int | None = None,
    ) -> Job:
        """Run `algorithm` next to `dataset` on its owner's compute node (compute-to-data).

        `algorithm` is a path to a ``.py`` file defining ``run(inputs, params,
        output_dir)``, its code as a string, or a built-in name (``fedavg-logistic``);
        `params` is any JSON object. Asks the node whether it computes on the dataset,
        then orders the dataset's compute service if you hold no valid order (paying its
        price, at most `max_price` base units): a refused dataset costs nothing. Returns
        a :class:`Job`: ``.status()``, ``.wait()`` (at once while the owner reviews), ``.logs()``,
        ``.result(dir)`` (decrypted for you alone, checked against the hash on chain).

        >>> job = net.compute(3, Path("train.py"), {"target": "label"})
        >>> job.wait()["state"]
        'succeeded'
        """
        from datagora.market.compute import submit

        return Job(submit(self, dataset, algorithm, params, node=node, max_price=max_price))

    def offer_compute(
        self,
        dataset: int,
        trusted: Sequence[str | Path] = (),
        *,
        service: int = 1,
        days: int = 1,
        dp: bool | None = None,
        untrusted: Sequence[str | Path] = (),
    ) -> dict[str, Any]:
        """As the owner: offer compute on `dataset` (metadata and chain) and trust the
        `trusted` algorithms (files, code or built-in names); others wait for review.
        ``dp=True`` requires differential privacy of every job (then only the nodes' DP
        algorithms, ``fedavg-logistic-dp`` and ``dp-query``, may be trusted),
        ``dp=False`` lifts it, None keeps the current setting (as ``datagora compute
        offer --require-dp/--no-require-dp``); `untrusted` stops trusting algorithms."""
        from datagora.market.compute import load_algorithm, offer_compute

        codes = [load_algorithm(a) for a in trusted]
        dropped = [load_algorithm(a) for a in untrusted]
        return offer_compute(
            self,
            dataset,
            codes,
            service=service,
            days=days,
            differential_privacy=dp,
            untrusted=dropped,
        )

    def untrust(self, dataset: int, algorithm: str | Path) -> dict[str, Any]:
        """As the owner: stop trusting `algorithm` (a file, code or built-in name) on
        `dataset`, on chain and in the metadata's offer; its next jobs wait for your
        review. Jobs already approved stay so."""
        return self.offer_compute(dataset, (), untrusted=[algorithm])

    def job(self, job: int, node: str | None = None) -> Job:
        """A handle on one of your earlier compute jobs, by id."""
        from datagora.market.compute import job_handle

        return Job(job_handle(self, job, node))

    # -- the owner's side of compute (as `datagora jobs …`) ----------------------------

    def _owner(self, node: str | None, dataset: int | None = None) -> OwnerClient:
        from datagora.market.compute import OwnerClient

        endpoints = self.endpoints
        url = node or (endpoints.compute if dataset is None else endpoints.compute_node(dataset))
        if not url:
            raise ConfigError("the network names no compute node: pass node=URL")
        return OwnerClient(
            url, self.identity, self.ledger.chain.chain_id, self.ledger.compute.address
        )

    def _job_owner(self, job: int, node: str | None) -> OwnerClient:
        return self._owner(node, None if node else self.ledger.compute.job(job).dataset)

    def pending_jobs(
        self, dataset: int | None = None, node: str | None = None
    ) -> list[dict[str, Any]]:
        """As a dataset's owner: the jobs on your datasets waiting for your review, at the
        network's compute node (or `dataset`'s, where each owner runs one, as in an
        embedded network; or the node at `node`)."""
        with self._owner(node, dataset) as owner:
            return owner.pending()

    def review_job(self, job: int, node: str | None = None) -> dict[str, Any]:
        """As the owner: a pending job (``job``), its algorithm's ``code`` and ``params``."""
        with self._job_owner(job, node) as owner:
            return owner.review(job)

    def approve_job(self, job: int, node: str | None = None) -> dict[str, Any]:
        """As the owner: approve a pending job (recorded on chain); it then runs."""
        with self._job_owner(job, node) as owner:
            return owner.approve(job)

    def deny_job(self, job: int, reason: str, node: str | None = None) -> dict[str, Any]:
        """As the owner: deny a pending job with a reason (recorded on chain)."""
        with self._job_owner(job, node) as owner:
            return owner.deny(job, reason)

    def cancel_job(self, job: int, node: str | None = None) -> dict[str, Any]:
        """As the owner: cancel a pending or queued job (recorded on chain; a job paid
        through the escrow is refunded to its consumer)."""
        with self._job_owner(job, node) as owner:
            return owner.cancel(job)

    def price_jobs(self, dataset: int, price: int, timeout: int = 3600) -> tuple[int, int]:
        """As the owner: sell jobs on `dataset` one by one at `price` base units of the
        market currency, paid through the escrow (0: jobs are paid by orders only); an
        escrow waits `timeout` seconds (at most 30 days) for its job's result, then its
        consumer may take the money back. Applies to later jobs. The new terms."""
        self.ledger.compute.set_job_terms(self.identity.account, dataset, price, timeout)
        return self.ledger.compute.job_terms(dataset)

    # -- storage deals (as `datagora storage …`) ----------------------------------------

    def open_storage_deal(self, dataset: int, nodes: dict[str, str], terms: DealTerms) -> int:
        """Pay storage nodes (URL -> their account address) per proven period for the
        shares of `dataset` its placement puts on them; returns the deal id."""
        from datagora.market.deals import open_deal

        return open_deal(self, dataset, nodes, terms)[0]

    def end_storage_deal(self, deal: int) -> None:
        """End a deal this account opened: periods not yet started are refunded."""
        from datagora.market.deals import end_deal

        end_deal(self, deal)

    def storage_deals(self, owner: str | None = None) -> list[dict[str, Any]]:
        """What an owner pays: every deal (of `owner`), as `datagora storage deals --json`."""
        from datagora.market.deals import deal_summaries

        return [s.to_json() for s in deal_summaries(self, owner)]

    def node_earnings(self, node: str) -> list[dict[str, Any]]:
        """What a storage node earned, proved and lost, per deal."""
        from datagora.market.deals import node_earnings

        return node_earnings(self, node)

    # -- market tokens (as `datagora fund` and `datagora transfer`) --------------------

    def fund(self, to: str, amount: int) -> Funded:
        """On a development chain only: mint `amount` base units of the market currency to
        `to` from the faucet (and ether for gas if it has none); refused elsewhere."""
        from datagora.node.faucet import fund

        return fund(self.ledger, to, amount)

    def transfer(self, to: str, amount: int) -> Funded:
        """Send `amount` base units of the market currency from this account to `to`."""
        from datagora.node.faucet import transfer

        return transfer(self.ledger, self.identity.account, to, amount)

    def train(
        self,
        datasets: Sequence[int],
        target: str = "target",
        *,
        algorithm: str | Path | None = None,
        rounds: int | None = None,
        features: Sequence[str] | None = None,
        nodes: dict[int, str] | None = None,
        epochs: int = 5,
        timeout: float = 300.0,
        on_job: Callable[[int, dict[str, Any]], None] | None = None,
        dp: dict[str, Any] | None = None,
        classes: Sequence[Any] = (0, 1),
    ) -> FederatedModel:
        """Federated training over `datasets`: per round, one compute job per dataset on
        its owner's node; only weights leave the nodes; every job is recorded on chain.

        Without `dp`: FedAvg (``fedavg-logistic``, `rounds` default 3 after one round of
        aggregate statistics), weights averaged by rows. With
        ``dp={"epsilon": e, "bounds": {feature: [lower, upper]}}`` (bounds for every
        feature, from domain knowledge, never from the data): ``fedavg-logistic-dp``, one
        round, each site trains an epsilon-DP model and spends `e` of your budget on its
        dataset; the models are averaged with equal weights and ``model.epsilon`` maps
        each dataset to the epsilon spent; `classes` are the target's two values
        (negative, positive), declared rather than read from the data. A training over
        budget on any site is refused before anything runs
        (:class:`~datagora.compute.errors.BudgetExceeded`).

        Returns a :class:`~datagora.compute.federated.FederatedModel` (``predict``,
        ``score``, ``to_json``; ``jobs`` lists the job ids). `features` default to the
        first dataset's metadata columns except `target`; `nodes` maps a dataset to its
        compute node (default: the network's); `timeout` bounds the wait for each job, in
        seconds. The arguments are those of :func:`datagora.market.compute.train`, in
        its order (only `datasets` and `target` by position).

        >>> model = net.train([1, 2, 3], rounds=3, target="label")
        >>> model = net.train([1, 2, 3], target="label", features=["age", "bmi"],
        ...                   dp={"epsilon": 1.0, "bounds": {"age": [0, 120], "bmi": [10, 60]}})
        >>> model.score(x_test, y_test), model.epsilon
        """
        from datagora.market.compute import train

        return train(
            self,
            datasets,
            target,
            algorithm=algorithm,
            rounds=rounds,
            features=features,
            nodes=nodes,
            epochs=epochs,
            timeout=timeout,
            on_job=on_job,
            dp=dp,
            classes=classes,
        )


class Dataset:
    """One dataset seen through a :class:`Market` (see :meth:`Market.dataset`)."""

    def __init__(self, market: Market, dataset: int) -> None:
        self.market = market
        self.id = dataset

    def __repr__(self) -> str:
        return f"Dataset({self.id})"

    @property
    def info(self) -> Any:
        """The on-chain record: controller, version, hashes, state."""
        return self.market.dataset_info(self.id)

    def metadata(self) -> Any:
        """The metadata, fetched and checked against its on-chain hash."""
        return self.market.metadata(self.id)

    def buy_and_order(self, service_id: int = 0, max_price: int | None = None) -> Any:
        """Buy one access and order it in one transaction (at most `max_price`)."""
        return self.market.buy_and_order(self.id, service_id, max_price)

    def order_free(self, service_id: int = 0) -> Any:
        """Take a free datatoken from the dispenser and order with it."""
        return self.market.order_free(self.id, service_id)

    def request_access(self, purpose: str) -> int:
        """File an on-chain access request (approval datasets); returns its id."""
        return self.market.request_access(self.id, purpose)

    def condition(self, service_id: int = 0) -> str | None:
        """The access condition proxies check for this service, as text (grammar in
        ``docs/ledger.md``), or None: orders and grants open it."""
        from datagora.ledger.conditions import render

        found = self.market.condition(self.id, service_id)
        return None if found is None else render(found)

    def set_condition(self, condition: str | None, service_id: int = 0) -> Any:
        """Set (owner only) the access condition proxies check before each answer,
        e.g. ``"order AND before:2027-01-01"``; None clears it."""
        return self.market.set_condition(self.id, condition, service_id)

    def read_bytes(self) -> bytes:
        return self.market.read_bytes(self.id)

    def download(self, dst: str | os.PathLike[str]) -> Any:
        return self.market.download(self.id, dst)

    def to_pandas(self) -> Any:
        return self.market.to_pandas(self.id)

    def to_numpy(self) -> Any:
        return self.market.to_numpy(self.id)

    def to_torch(
        self, target: str | None = None, features: Sequence[str] | None = None
    ) -> TabularDataset:
        return self.market.to_torch(self.id, target, features)

    def mock(self) -> bytes:
        """The public mock data (synthetic rows with the real schema)."""
        return self.market.mock(self.id)

    def compute(
        self, algorithm: str | Path, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> Job:
        """Run `algorithm` next to this dataset (see :meth:`Market.compute`)."""
        return self.market.compute(self.id, algorithm, params, **kwargs)

    def transfer(self, to: Market | PublicIdentity | dict[str, Any]) -> Any:
        """As its holder: give this dataset (its data NFT) to `to` — another
        :class:`Market` (an account you also run: the whole lifecycle happens here,
        re-key included) or the recipient's public record (``datagora account
        export-public``: they then run :meth:`rekey`). The data key is left on chain
        wrapped to the recipient; until the re-key, the dataset neither sells nor
        serves. Returns the handover (and, for a Market, the re-key's transaction as
        ``rekey_tx``)."""
        if isinstance(to, Market):
            me = to.identity
            public = PublicIdentity(me.address, me.umbral_public_key, me.verifying_key)
        elif isinstance(to, dict):
            public = PublicIdentity.from_json(to)
        else:
            public = to
        handover = self.market.transfer_dataset(self.id, public)
        if not isinstance(to, Market):
            return handover
        return {"handover": handover, "rekey_tx": to.rekey(self.id)}

    def rekey(self) -> Any:
        """As the new holder of this transferred dataset: re-key it (see
        :meth:`Market.rekey`); it then sells and serves again."""
        return self.market.rekey(self.id)


def connect(
    network: Path | None = None,
    account: str | None = None,
    keys: Path | None = None,
    password: str | None = None,
    *,
    embedded: bool = False,
    rpc: str | None = None,
    deployment: Path | None = None,
    endpoints: Endpoints | None = None,
) -> Market:
    """Connect to a datagora network as `account`.

    * default: the network `datagora up` runs (its network file);
    * ``embedded=True``: a whole network in this process (embedded EVM, storage
      nodes, proxies, catalog; see :mod:`datagora.node.embedded`) as development account
      ``int(account or 1)``; close it with ``.close()`` or a ``with`` block;
    * ``rpc=URL, deployment=FILE``: any Ethereum JSON-RPC node where the contracts
      were deployed (``datagora chain deploy``), with the nodes in `endpoints`.

    Storage nodes, proxies and compute nodes not named (by the network file or
    `endpoints`) are discovered from the on-chain NodeRegistry: its active, staked
    nodes of each role.

    Without an account (none in the keystore directory) the market is read-only.
    """
    if embedded:
        from datagora.node.embedded import EmbeddedNetwork

        if network or rpc or deployment or endpoints:
            raise ConfigError("embedded=True starts its own network: give no network or rpc")
        try:
            index = int(account or 1)
        except ValueError:
            raise ConfigError("with embedded=True, account is a development account 0-9") from None
        embedded_net = EmbeddedNetwork()
        try:
            return Market(
                embedded_net.ledger, embedded_net.endpoints, dev_identity(index), embedded_net
            )
        except BaseException:
            embedded_net.close()
            raise
    if rpc is not None:
        if deployment is None:
            raise ConfigError("rpc=... needs deployment=FILE (written by datagora chain deploy)")
        ledger = Ledger.connect(rpc, deployment)
        identity = (
            open_identity(None, account, keys, password)
            if account or os.environ.get("DATAGORA_ACCOUNT")
            else None
        )
        # Nodes not given (all, by default) are discovered from the NodeRegistry.
        found = discover(ledger, endpoints or Endpoints([]), identity.address if identity else None)
        return Market(ledger, found, identity)
    net = load_network(network)
    identity = (
        open_identity(net, account, keys, password) if has_account(net, account, keys) else None
    )
    return marketplace_for(net, identity, Market)
