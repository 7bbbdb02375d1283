"""Compute-to-data from a :class:`~datagora.market.Marketplace`: what the CLI and SDK call.

Consumer side: find the dataset's compute service (its public metadata), reuse the
consumer's valid order for it or order now (buy-and-order at the fixed price, the
dispenser for a free dataset, or a datatoken the consumer already holds), submit the
signed job to the owner's compute node, and follow it with a :class:`Job` handle.
:func:`train` runs FedAvg over several datasets the same way.

Owner side: :class:`OwnerClient` lists, reviews, approves and denies jobs with
requests signed by the dataset's controller (:mod:`datagora.compute.owner`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from datagora.compute.client import ComputeClient, extract_archive
from datagora.compute.errors import ComputeError, JobRefused
from datagora.compute.federated import FEDAVG_ALGORITHM, FederatedModel, Site, federated_train
from datagora.compute.node import REQUEST_HEADER
from datagora.compute.owner import encode_header, sign_owner_request
from datagora.compute.results import open_result
from datagora.crypto.keys import Identity
from datagora.errors import ConfigError, DatagoraError, NotFoundError
from datagora.market import Marketplace

__all__ = [
    "BUILTIN_ALGORITHMS",
    "Job",
    "OwnerClient",
    "compute_service",
    "ensure_order",
    "load_algorithm",
    "offer_compute",
    "submit",
    "train",
]

BUILTIN_ALGORITHMS: dict[str, str] = {"fedavg-logistic": FEDAVG_ALGORITHM}
"""Algorithms known by name (``--algorithm fedavg-logistic``)."""


def load_algorithm(algorithm: str | Path) -> str:
    """An algorithm's code: a built-in name, a path to a ``.py`` file, or the code itself."""
    if isinstance(algorithm, str) and algorithm in BUILTIN_ALGORITHMS:
        return BUILTIN_ALGORITHMS[algorithm]
    if isinstance(algorithm, Path) or (
        "\n" not in algorithm and algorithm.endswith(".py") and len(algorithm) < 4096
    ):
        try:
            return Path(algorithm).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the algorithm {algorithm}: {exc}") from None
    if "def run" not in algorithm:
        raise ConfigError(
            "the algorithm is neither a .py file, a built-in name "
            f"({', '.join(BUILTIN_ALGORITHMS)}), nor code defining run(inputs, params, output_dir)"
        )
    return algorithm


def offer_compute(
    market: Marketplace,
    dataset: int,
    trusted: Sequence[str] = (),
    *,
    service: int = 1,
    days: int = 1,
) -> dict[str, Any]:
    """As the dataset's owner: offer a compute service on it — listed in its metadata
    (a new version if the metadata changes), set on chain with orders lasting `days` —
    and trust the algorithms whose code is in `trusted` (their SHA-256 on chain);
    other algorithms wait for the owner's review."""
    from datagora.compute.jobs import algorithm_hash

    if days <= 0:
        raise ConfigError("an order must last at least one day")
    me = market.identity
    hashes = [algorithm_hash(code.encode()) for code in trusted]
    meta = market.metadata(dataset)
    entry = next((s for s in meta.services if s.type == "compute"), None)
    if entry is not None and entry.id != service:
        raise ConfigError(f"dataset {dataset} already offers compute as service {entry.id}")
    listed = set(entry.trusted_algorithms) if entry is not None else set()
    wanted = listed | {h.hex() for h in hashes}
    updated = entry is None or wanted != listed
    if updated:
        doc = meta.model_dump(mode="json", exclude_none=True)
        doc.pop("publisher_keys", None)
        doc["services"] = [s for s in doc["services"] if s["type"] != "compute"]
        doc["services"].append(
            {
                "id": service,
                "type": "compute",
                "price": meta.services[0].price,
                "timeout": days * 86_400,
                "trusted_algorithms": sorted(wanted),
                "differential_privacy": bool(entry and entry.differential_privacy),
            }
        )
        market.update_metadata(dataset, doc)
    market.ledger.datatoken(dataset).set_service(me.account, service, days * 86_400)
    for h in hashes:
        market.ledger.compute.set_trusted(me.account, dataset, h, True)
    return {
        "dataset": dataset,
        "service": service,
        "trusted": [h.hex() for h in hashes],
        "metadata_updated": updated,
    }


def compute_service(market: Marketplace, dataset: int) -> int:
    """The id of the dataset's compute service, from its metadata."""
    services = [s for s in market.metadata(dataset).services if s.type == "compute"]
    if not services:
        raise NotFoundError(f"dataset {dataset} offers no compute service (see its metadata)")
    return services[0].id


def _valid_order(market: Marketplace, dataset: int, service_id: int) -> str | None:
    """The transaction of the consumer's latest order of `service_id`, if still valid."""
    me = market.identity
    token = market.ledger.datatoken(dataset)
    if not token.has_valid_order(me.address, service_id):
        return None
    latest = None
    for event in market.ledger.events():
        if (
            event.name == "OrderStarted"
            and int(event["dataset"]) == dataset
            and event["consumer"] == me.address
            and int(event["service_id"]) == service_id
            and bytes(event["consumer_key"]) == me.umbral_public_key
        ):
            latest = event.tx_hash
    return latest


def ensure_order(
    market: Marketplace, dataset: int, service_id: int, max_price: int | None = None
) -> tuple[str, bool]:
    """The consumer's valid compute order (its transaction hash), ordering if needed;
    the flag says whether an order was placed now."""
    found = _valid_order(market, dataset, service_id)
    if found is not None:
        return found, False
    ledger, me = market.ledger, market.identity
    if ledger.exchange.is_active(dataset):
        order = market.buy_and_order(dataset, service_id, max_price)
    elif ledger.dispenser.is_active(dataset):
        order = market.order_free(dataset, service_id)
    elif ledger.datatoken(dataset).balance_of(me.address) > 0:
        order = ledger.datatoken(dataset).order(me.account, service_id, me.umbral_public_key)
    else:
        raise ConfigError(
            f"dataset {dataset} is not for sale and you hold none of its datatokens: "
            "ask its owner for one"
        )
    return order.tx.tx_hash, True


@dataclass
class Job:
    """A compute job submitted by this consumer: follow it, read its logs and result."""

    job: int
    dataset: int
    client: ComputeClient
    market: Marketplace

    def status(self) -> dict[str, Any]:
        """The node's view of the job (``state``: pending, queued, running, succeeded,
        failed, denied; ``reason``; ``result_hash``; ``epsilon``)."""
        return self.client.status(self.job)

    def wait(self, timeout: float = 300.0) -> dict[str, Any]:
        """Wait until the job succeeded, failed or was denied; its final status."""
        return self.client.wait(self.job, timeout)

    def logs(self) -> str:
        """The job's stdout and stderr (capped; withheld if they reproduce input rows)."""
        return self.client.logs(self.job)

    def result(self, dest: str | Path | None = None) -> bytes:
        """The decrypted result archive (tar); unpacked into `dest` if given. The sealed
        result is checked against the result hash recorded on chain first."""
        info = self.status()
        if info["state"] != "succeeded":
            raise ComputeError(
                f"job {self.job} is {info['state']}"
                + (f": {info['reason']}" if info.get("reason") else "")
                + "; it has no result"
            )
        sealed = self.client.sealed_result(self.job)
        recorded = self.market.ledger.compute.job(self.job).result
        if hashlib.sha256(sealed).digest() != recorded:
            raise ComputeError(
                f"job {self.job}'s result does not match the hash recorded on chain: refused"
            )
        archive = open_result(self.client.consumer, sealed, self.job, "result")
        if dest is not None:
            extract_archive(archive, Path(dest))
        return archive

    def files(self, dest: str | Path) -> list[Path]:
        """Unpack the result into `dest`; the files written."""
        return extract_archive(self.result(), Path(dest))


def node_client(market: Marketplace, node: str | None) -> ComputeClient:
    """A client of the compute node at `node` (default: the network's compute node)."""
    url = node or market.endpoints.compute
    if not url:
        raise ConfigError("no compute node: the network file names none (pass --node URL)")
    return ComputeClient(url, market.identity, market.ledger.chain.chain_id)


def submit(
    market: Marketplace,
    dataset: int,
    algorithm: str | Path,
    params: Any = None,
    *,
    node: str | None = None,
    max_price: int | None = None,
) -> Job:
    """Order the dataset's compute service if needed and submit a job; its handle."""
    code = load_algorithm(algorithm)
    service = compute_service(market, dataset)
    order, _ = ensure_order(market, dataset, service, max_price)
    client = node_client(market, node)
    try:
        job = client.submit(dataset, order, code, {} if params is None else params)
    except httpx.HTTPError as exc:
        client.close()
        raise ConfigError(f"cannot reach the compute node at {client.url}: {exc}") from None
    return Job(job, dataset, client, market)


def job_handle(market: Marketplace, job: int, node: str | None = None) -> Job:
    """A handle on one of this consumer's existing jobs (its dataset read from the chain)."""
    try:
        record = market.ledger.compute.job(job)
    except DatagoraError:
        raise NotFoundError(f"there is no job {job} on chain") from None
    return Job(job, record.dataset, node_client(market, node), market)


def train(
    market: Marketplace,
    datasets: Sequence[int],
    target: str,
    *,
    algorithm: str | Path = "fedavg-logistic",
    rounds: int = 3,
    features: Sequence[str] | None = None,
    nodes: dict[int, str] | None = None,
    epochs: int = 5,
    timeout: float = 300.0,
    on_job: Callable[[int, dict[str, Any]], None] | None = None,
) -> FederatedModel:
    """Federated training (FedAvg) over `datasets`: one compute job per dataset per round
    on its owner's node (``nodes`` maps a dataset to its node; default the network's).
    `features` default to the first dataset's metadata columns except `target`."""
    if len(set(datasets)) != len(datasets) or not datasets:
        raise ConfigError("give one or more distinct datasets")
    if rounds < 1:
        raise ConfigError("rounds must be at least 1")
    code = load_algorithm(algorithm)
    if features is None:
        columns = market.metadata(datasets[0]).columns
        if not columns:
            raise ConfigError(f"dataset {datasets[0]}'s metadata lists no columns: give features")
        features = [c.name for c in columns if c.name != target]
        if len(features) == len(columns):
            raise ConfigError(f"dataset {datasets[0]} has no column {target!r}")
    sites: list[Site] = []
    try:
        for dataset in datasets:
            service = compute_service(market, dataset)
            order, _ = ensure_order(market, dataset, service)
            client = node_client(market, (nodes or {}).get(dataset))
            sites.append(Site(client, dataset, order))
        return federated_train(
            sites,
            list(features),
            target,
            rounds=rounds,
            epochs=epochs,
            timeout=timeout,
            algorithm=code,
            on_job=on_job,
        )
    finally:
        for site in sites:
            site.client.close()


class OwnerClient:
    """A dataset controller at a compute node: pending jobs, review, approve, deny."""

    def __init__(self, url: str, owner: Identity, chain_id: int, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.owner = owner
        self.chain_id = chain_id
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OwnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, action: str, job: int = 0, reason: str = "") -> Any:
        signed = sign_owner_request(self.owner, self.chain_id, action, job, reason)
        headers = {REQUEST_HEADER: encode_header(signed)}
        try:
            if method == "GET":
                response = self._http.get(f"{self.url}{path}", headers=headers)
            else:
                body = {"reason": reason} if action == "deny" else None
                response = self._http.post(f"{self.url}{path}", headers=headers, json=body)
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach the compute node at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise JobRefused(str(detail), response.status_code)
        return response.json()

    def pending(self) -> list[dict[str, Any]]:
        """Jobs on your datasets waiting for your review."""
        result: list[dict[str, Any]] = self._call("GET", "/owner/jobs", "list")
        return result

    def review(self, job: int) -> dict[str, Any]:
        """The job (``job``), the algorithm's code (``code``) and its ``params``."""
        result: dict[str, Any] = self._call("GET", f"/owner/jobs/{job}/review", "review", job)
        return result

    def approve(self, job: int) -> dict[str, Any]:
        """Approve: recorded on chain, then the job runs."""
        result: dict[str, Any] = self._call("POST", f"/owner/jobs/{job}/approve", "approve", job)
        return result

    def deny(self, job: int, reason: str) -> dict[str, Any]:
        """Deny with a reason (recorded on chain)."""
        result: dict[str, Any] = self._call("POST", f"/owner/jobs/{job}/deny", "deny", job, reason)
        return result
