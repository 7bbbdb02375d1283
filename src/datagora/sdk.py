"""The data scientist's entry point: ``dg.connect()``.

>>> import datagora as dg
>>> market = dg.connect()                      # the network `datagora up` started
>>> hits = market.search("breast cancer")      # the catalog
>>> market.buy_and_order(hits[0]["id"]); df = market.to_pandas(hits[0]["id"])
>>> job = market.compute(3, "train.py", {"target": "label"})   # compute-to-data
>>> job.wait(); job.result("results/")
>>> model = market.train([1, 2, 3], target="label", rounds=3)  # federated (FedAvg)
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from datagora.crypto.keys import Identity, default_keys_dir, list_accounts, load_account
from datagora.errors import ConfigError
from datagora.ledger import Ledger
from datagora.market import Endpoints, Marketplace
from datagora.node.network import Network, load_network

if TYPE_CHECKING:
    from datagora.compute.federated import FederatedModel
    from datagora.compute.market import Job
    from datagora.torchdata import TabularDataset

__all__ = ["Dataset", "Market", "connect"]


def keys_dir_for(net: Network | None, keys: Path | None = None) -> Path:
    """Where the account keystores are: explicit, $DATAGORA_KEYS_DIR, the local
    network's own (for `datagora up`), else ~/.datagora/keys."""
    if keys is not None:
        return keys
    if os.environ.get("DATAGORA_KEYS_DIR"):
        return default_keys_dir()
    if net is not None and net.state_dir and (Path(net.state_dir) / "keys").is_dir():
        return Path(net.state_dir) / "keys"
    return default_keys_dir()


def password_for(net: Network | None) -> str | None:
    """$DATAGORA_PASSWORD, or the development password `datagora up` generated."""
    env = os.environ.get("DATAGORA_PASSWORD")
    if env:
        return env
    if net is not None and net.state_dir and (Path(net.state_dir) / "password").is_file():
        return (Path(net.state_dir) / "password").read_text().strip()
    return None


def open_identity(
    net: Network | None, account: str | None, keys: Path | None, password: str | None
) -> Identity:
    folder = keys_dir_for(net, keys)
    name = account or os.environ.get("DATAGORA_ACCOUNT")
    if name is None:
        found = list_accounts(folder)
        if len(found) != 1:
            raise ConfigError(
                f"{len(found)} accounts in {folder}: choose one (account=... or "
                "$DATAGORA_ACCOUNT; see `datagora account list`)"
            )
        name = found[0].address
    secret = password or password_for(net)
    if secret is None:
        raise ConfigError("set DATAGORA_PASSWORD to the keystore password")
    return load_account(folder, name, secret)


class Market(Marketplace):
    """A :class:`Marketplace` with the catalog and pandas conveniences."""

    def search(self, q: str = "", **filters: Any) -> list[dict[str, Any]]:
        """Datasets matching `q` (word prefixes) and filters (tag, license, max_price, ...)."""
        if not self.endpoints.catalog:
            raise ConfigError("this network has no catalog")
        r = httpx.get(
            f"{self.endpoints.catalog.rstrip('/')}/datasets", params={"q": q, **filters}, timeout=10
        )
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
        the ``datagora[torch]`` extra); see :class:`datagora.torchdata.TabularDataset`."""
        from datagora.torchdata import TabularDataset

        return TabularDataset(self.to_pandas(dataset), target, features)

    def dataset(self, dataset: int) -> Dataset:
        """A handle on one dataset: ``.info``, ``.metadata()``, ``.buy_and_order()``,
        ``.to_pandas()``, ``.to_numpy()``, ``.to_torch()``, ``.compute()``.

        >>> ds = net.dataset(3)
        >>> ds.buy_and_order(); frame = ds.to_pandas()
        """
        self.ledger.data_nft.get_dataset(dataset)  # a clear error now if there is no such dataset
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
        a :class:`~datagora.compute.market.Job`: ``.status()``, ``.wait()``, ``.logs()``,
        ``.result(dir)`` (decrypted for you alone, checked against the hash on chain).

        >>> job = net.compute(3, Path("train.py"), {"target": "label"})
        >>> job.wait()["state"]
        'succeeded'
        """
        from datagora.compute.market import submit

        return submit(self, dataset, algorithm, params, node=node, max_price=max_price)

    def offer_compute(
        self, dataset: int, trusted: Sequence[str | Path] = (), *, service: int = 1, days: int = 1
    ) -> dict[str, Any]:
        """As the owner: offer compute on `dataset` (metadata and chain) and trust the
        `trusted` algorithms (files, code or built-in names); others wait for review."""
        from datagora.compute.market import load_algorithm, offer_compute

        codes = [load_algorithm(a) for a in trusted]
        return offer_compute(self, dataset, codes, service=service, days=days)

    def job(self, job: int, node: str | None = None) -> Job:
        """A handle on one of your earlier compute jobs, by id."""
        from datagora.compute.market import job_handle

        return job_handle(self, job, node)

    def train(
        self,
        datasets: Sequence[int],
        algorithm: str | Path | None = None,
        rounds: int | None = None,
        *,
        target: str = "target",
        features: Sequence[str] | None = None,
        epochs: int = 5,
        nodes: dict[int, str] | None = None,
        on_job: Callable[[int, dict[str, Any]], None] | None = None,
        dp: dict[str, Any] | None = None,
    ) -> FederatedModel:
        """Federated training over `datasets`: per round, one compute job per dataset on
        its owner's node; only weights leave the nodes; every job is recorded on chain.

        Without `dp`: FedAvg (``fedavg-logistic``, `rounds` default 3 after one round of
        aggregate statistics), weights averaged by rows. With
        ``dp={"epsilon": e, "bounds": {feature: [lower, upper]}}`` (bounds for every
        feature, from domain knowledge, never from the data): ``fedavg-logistic-dp``, one
        round, each site trains an epsilon-DP model and spends `e` of your budget on its
        dataset; the models are averaged with equal weights and ``model.epsilon`` maps
        each dataset to the epsilon spent. A training over budget on any site is refused
        before anything runs (:class:`~datagora.compute.errors.BudgetExceeded`).

        Returns a :class:`~datagora.compute.federated.FederatedModel` (``predict``,
        ``score``, ``to_json``; ``jobs`` lists the job ids). `features` default to the
        first dataset's metadata columns except `target`; `nodes` maps a dataset to its
        compute node (default: the network's).

        >>> model = net.train([1, 2, 3], rounds=3, target="label")
        >>> model = net.train([1, 2, 3], target="label", features=["age", "bmi"],
        ...                   dp={"epsilon": 1.0, "bounds": {"age": [0, 120], "bmi": [10, 60]}})
        >>> model.score(x_test, y_test), model.epsilon
        """
        from datagora.compute.market import train

        return train(
            self,
            datasets,
            target,
            algorithm=algorithm,
            rounds=rounds,
            features=features,
            nodes=nodes,
            epochs=epochs,
            on_job=on_job,
            dp=dp,
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
        return self.market.ledger.data_nft.get_dataset(self.id)

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
      nodes, proxies, catalog; see :mod:`datagora.embedded`) as development account
      ``int(account or 1)``; close it with ``.close()`` or a ``with`` block;
    * ``rpc=URL, deployment=FILE``: any Ethereum JSON-RPC node where the contracts
      were deployed (``datagora chain deploy``), with the nodes in `endpoints`.

    Without an account (none in the keystore directory) the market is read-only.
    """
    if embedded:
        from datagora.embedded import EmbeddedNetwork

        if network or rpc or deployment or endpoints:
            raise ConfigError("embedded=True starts its own network: give no network or rpc")
        try:
            index = int(account or 1)
        except ValueError:
            raise ConfigError("with embedded=True, account is a development account 0-9") from None
        embedded_net = EmbeddedNetwork()
        try:
            return embedded_net.market(index)
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
        return Market(ledger, endpoints or Endpoints([]), identity)
    net = load_network(network)
    ledger = Ledger.connect(net.chain_url, net.deployment)
    folder = keys_dir_for(net, keys)
    identity = (
        open_identity(net, account, keys, password)
        if account or list_accounts(folder) or os.environ.get("DATAGORA_ACCOUNT")
        else None
    )
    endpoints = Endpoints(
        net.storage, net.proxies, max(net.threshold, 1), net.catalog, compute=net.compute
    )
    return Market(ledger, endpoints, identity)
