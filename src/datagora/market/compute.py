"""The market flows of compute-to-data, on a :class:`~datagora.market.Marketplace`: what the
CLI and SDK call.

Consumer side: find the dataset's compute service (its public metadata), reuse the
consumer's valid order for it or order now (buy-and-order at the fixed price, the
dispenser for a free dataset, or a datatoken the consumer already holds), submit the
signed job to the owner's compute node, and follow it with a :class:`Job` handle.
Before ordering, the node is asked whether it computes on the dataset at all
(:func:`served`), so that nobody pays for a job it would refuse. :func:`train` runs
federated training over several datasets the same way (under DP with ``dp=...``).

A dataset whose jobs are sold one by one (``ComputeRegistry.set_job_terms``) is paid
per job through the escrow instead: the price is locked for the job's algorithm and
parameters, the lock's transaction goes to the node, and an escrow the node refuses
is taken back at once.

Owner side: :class:`OwnerClient` lists, reviews, approves, denies and cancels jobs with
requests signed by the dataset's controller (:mod:`datagora.compute.owner`).

Compute node side: :class:`OwnerDatasets` is the :class:`~datagora.compute.stored.DatasetSource`
a compute node reads its operator's datasets from: their metadata and stored versions,
the way the owner reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from datagora.compute.algorithms import BUILTIN_FILES, DP_ALGORITHMS, dp_algorithm_hashes, source
from datagora.compute.client import ComputeClient, extract_archive
from datagora.compute.errors import ComputeError, JobRefused
from datagora.compute.federated import (
    FEDAVG_ALGORITHM,
    FEDAVG_DP_ALGORITHM,
    FederatedModel,
    Site,
    check_budgets,
    dp_declaration,
    federated_train,
)
from datagora.compute.node import REQUEST_HEADER
from datagora.compute.owner import encode_header, sign_owner_request
from datagora.compute.results import open_result
from datagora.compute.stored import ComputeOffer
from datagora.crypto.keys import Identity
from datagora.errors import ConfigError, DatagoraError, NotFoundError, Unreachable
from datagora.ledger import Ledger
from datagora.market.flows import Endpoints, Marketplace

__all__ = [
    "BUILTIN_ALGORITHMS",
    "Job",
    "OwnerClient",
    "OwnerDatasets",
    "compute_service",
    "ensure_order",
    "load_algorithm",
    "offer_compute",
    "order_for",
    "served",
    "submit",
    "train",
]

BUILTIN_ALGORITHMS: dict[str, str] = {name: source(name) for name in BUILTIN_FILES}
"""Algorithms known by name (``--algorithm fedavg-logistic``, ``fedavg-logistic-dp``,
``dp-query``); the last two are the compute nodes' DP algorithms."""


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
    differential_privacy: bool | None = None,
    untrusted: Sequence[str] = (),
) -> dict[str, Any]:
    """As the dataset's owner: offer a compute service on it — listed in its metadata
    (a new version if the metadata changes), set on chain with orders lasting `days` —
    and trust the algorithms whose code is in `trusted` (their SHA-256 on chain);
    other algorithms wait for the owner's review; `untrusted` (code, or the SHA-256 in
    hex) stops trusting algorithms. `differential_privacy` True makes every job declare
    epsilon and bounds and spend from the dataset's budget (the compute node's); None
    keeps what the metadata says. With DP, only the nodes' DP algorithms
    (``fedavg-logistic-dp``, ``dp-query``) may be trusted: trusting other code would let
    it run on raw rows unreviewed, so that is refused (:class:`ConfigError`), changing
    nothing."""
    from datagora.compute.jobs import algorithm_hash

    if days <= 0:
        raise ConfigError("an order must last at least one day")
    me = market.identity
    hashes = [algorithm_hash(code.encode()) for code in trusted]
    dropped = {
        code.lower()
        if len(code) == 64 and all(c in "0123456789abcdefABCDEF" for c in code)
        else algorithm_hash(code.encode()).hex()
        for code in untrusted
    }
    meta = market.metadata(dataset)
    entry = next((s for s in meta.services if s.type == "compute"), None)
    if entry is not None and entry.id != service:
        raise ConfigError(f"dataset {dataset} already offers compute as service {entry.id}")
    listed = set(entry.trusted_algorithms) if entry is not None else set()
    wanted = (listed | {h.hex() for h in hashes}) - dropped
    had_dp = bool(entry and entry.differential_privacy)
    want_dp = had_dp if differential_privacy is None else differential_privacy
    if want_dp:
        dp_hashes = {h.hex() for h in dp_algorithm_hashes()}
        not_dp = sorted(wanted - dp_hashes)
        if not_dp:
            names = {
                h.hex(): n
                for n, code in BUILTIN_ALGORITHMS.items()
                for h in [algorithm_hash(code.encode())]
            }
            shown = ", ".join(names.get(h, h[:16] + "…") for h in not_dp)
            raise ConfigError(
                f"dataset {dataset} requires differential privacy, but {shown} is not one of "
                f"the compute nodes' DP algorithms ({', '.join(DP_ALGORITHMS)}): trusted, it "
                "would run on raw rows unreviewed. Trust only DP algorithms (untrust the "
                "others); other code waits for your review"
            )
    updated = entry is None or wanted != listed or want_dp != had_dp
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
                "differential_privacy": want_dp,
            }
        )
        market.update_metadata(dataset, doc)
    market.ledger.datatoken(dataset).set_service(me.account, service, days * 86_400)
    for gone in sorted(dropped):
        market.ledger.compute.set_trusted(me.account, dataset, bytes.fromhex(gone), False)
    for h in hashes:
        if h.hex() not in dropped:
            market.ledger.compute.set_trusted(me.account, dataset, h, True)
    return {
        "dataset": dataset,
        "service": service,
        "trusted": [h.hex() for h in hashes if h.hex() not in dropped],
        "untrusted": sorted(dropped),
        "differential_privacy": want_dp,
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
    # Only this consumer's orders of this dataset, filtered by the node (indexed topics).
    for event in token.find_events(
        "OrderStarted", dataset, me.address, start=market.ledger.deployment.start_block
    ):
        if int(event["service_id"]) == service_id and bytes(event["consumer_key"]) in (
            market.consumer_key(),
            me.umbral_public_key,
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
        order = ledger.datatoken(dataset).order(me.account, service_id, market.consumer_key())
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
        """Wait until the job succeeded, failed, was denied or cancelled; its final status."""
        return self.client.wait(self.job, timeout)

    def cancel(self) -> dict[str, Any]:
        """Withdraw the job while it waits for review or in the queue; a job paid through
        the escrow is refunded on chain. Refused (409) once it runs."""
        return self.client.cancel(self.job)

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
        archive = open_result(
            self.client.consumer, sealed, self.job, "result", self.client.chain_id
        )
        if dest is not None:
            extract_archive(archive, Path(dest))
        return archive

    def files(self, dest: str | Path) -> list[Path]:
        """Unpack the result into `dest`; the files written."""
        return extract_archive(self.result(), Path(dest))


def node_client(market: Marketplace, node: str | None, dataset: int | None = None) -> ComputeClient:
    """A client of the compute node at `node` (default: the network's compute node, or
    the one that computes on `dataset` where each owner runs one)."""
    endpoints = market.endpoints
    url = node or (endpoints.compute if dataset is None else endpoints.compute_node(dataset))
    if not url:
        raise ConfigError("no compute node: the network file names none (pass --node URL)")
    return ComputeClient(
        url, market.identity, market.ledger.chain.chain_id, market.ledger.compute.address
    )


def served(client: ComputeClient, dataset: int) -> dict[str, Any]:
    """The node's view of `dataset` (version, ``service_id``, ``differential_privacy``,
    ``epsilon_budget``); :class:`JobRefused` if the node does not compute on it. Cheap
    and unpaid: ask it before ordering."""
    try:
        return client.dataset(dataset)
    except httpx.HTTPError as exc:
        raise Unreachable(
            f"cannot reach the compute node at {client.url}: {exc}", client.url
        ) from None


def order_for(
    market: Marketplace, client: ComputeClient, dataset: int, max_price: int | None = None
) -> tuple[str, bool]:
    """Check that `client`'s node computes on `dataset`, then :func:`ensure_order`: a
    refused dataset is refused before anything is paid."""
    served(client, dataset)
    return ensure_order(market, dataset, compute_service(market, dataset), max_price)


def submit(
    market: Marketplace,
    dataset: int,
    algorithm: str | Path,
    params: Any = None,
    *,
    node: str | None = None,
    max_price: int | None = None,
) -> Job:
    """Check that the node computes on the dataset, order its compute service if needed
    and submit a job; its handle."""
    code = load_algorithm(algorithm)
    client = node_client(market, node, dataset)
    params = {} if params is None else params
    try:
        if market.ledger.compute.job_terms(dataset)[0]:
            job = _submit_paid(market, client, dataset, code, params, max_price)
        else:
            order, _ = order_for(market, client, dataset, max_price)
            job = client.submit(dataset, order, code, params)
    except httpx.HTTPError as exc:
        client.close()
        raise Unreachable(
            f"cannot reach the compute node at {client.url}: {exc}", client.url
        ) from None
    except BaseException:
        client.close()
        raise
    return Job(job, dataset, client, market)


def _submit_paid(
    market: Marketplace,
    client: ComputeClient,
    dataset: int,
    code: str,
    params: Any,
    max_price: int | None,
) -> int:
    """Pay one job through the escrow (approve, lock) and submit it with the lock; if the
    node refuses the job, take the unused escrow back at once."""
    from datagora.compute.jobs import algorithm_hash, params_hash

    served(client, dataset)
    ledger, me = market.ledger, market.identity
    price, _ = ledger.compute.job_terms(dataset)
    limit = price if max_price is None else max_price
    if ledger.market_token.allowance(me.address, ledger.compute.address) < price:
        ledger.market_token.approve(me.account, ledger.compute.address, price)
    lock = ledger.compute.lock(
        me.account,
        dataset,
        algorithm_hash(code.encode()),
        params_hash(params),
        me.umbral_public_key,
        max_price=limit,
    )
    try:
        return client.submit(dataset, lock.tx.tx_hash, code, params)
    except (JobRefused, httpx.HTTPError):
        ledger.compute.reclaim(me.account, lock.escrow)  # nobody pays for a refused job
        raise


def job_handle(market: Marketplace, job: int, node: str | None = None) -> Job:
    """A handle on one of this consumer's existing jobs (its dataset read from the chain)."""
    try:
        record = market.ledger.compute.job(job)
    except DatagoraError:
        raise NotFoundError(f"there is no job {job} on chain") from None
    return Job(job, record.dataset, node_client(market, node, record.dataset), market)


def train(
    market: Marketplace,
    datasets: Sequence[int],
    target: str,
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
    """Federated training over `datasets`: one compute job per dataset per round on its
    owner's node (``nodes`` maps a dataset to its node; default the network's).
    `features` default to the first dataset's metadata columns except `target`.

    Without `dp`: FedAvg (``fedavg-logistic``), `rounds` defaults to 3. With
    ``dp={"epsilon": e, "bounds": {feature: [lower, upper]}}``: one round of
    ``fedavg-logistic-dp`` spending `e` on every dataset (see
    :mod:`datagora.compute.federated`); ``model.epsilon`` maps each dataset to the
    epsilon spent; `classes` are the target's two values (negative, positive), declared
    rather than read from the data. Every node is asked whether it serves its dataset
    (and whether the owner requires DP) before anything is ordered."""
    if len(set(datasets)) != len(datasets) or not datasets:
        raise ConfigError("give one or more distinct datasets")
    if rounds is not None and rounds < 1:
        raise ConfigError("rounds must be at least 1")
    if algorithm is None:
        algorithm = "fedavg-logistic-dp" if dp is not None else "fedavg-logistic"
    code = load_algorithm(algorithm)
    if dp is not None and code == FEDAVG_ALGORITHM:
        raise ConfigError(
            "fedavg-logistic trains on raw rows and releases exact statistics: "
            "with DP use fedavg-logistic-dp"
        )
    if dp is None and code == FEDAVG_DP_ALGORITHM:
        raise ConfigError(
            "fedavg-logistic-dp needs a DP declaration: epsilon and bounds for every feature"
        )
    if dp is not None and rounds not in (None, 1):
        raise ConfigError(
            "differentially private federated training runs one round (one DP model per "
            "site, averaged once): pass rounds=1 or leave it out"
        )
    if features is None:
        columns = market.metadata(datasets[0]).columns
        if not columns:
            raise ConfigError(f"dataset {datasets[0]}'s metadata lists no columns: give features")
        features = [c.name for c in columns if c.name != target]
        if len(features) == len(columns):
            raise ConfigError(f"dataset {datasets[0]} has no column {target!r}")
    epsilon = dp_declaration(dp, features)[0] if dp is not None else 0.0
    clients: dict[int, ComputeClient] = {}
    sites: list[Site] = []
    try:
        # Ask every node first: nothing is ordered for a training that would be refused.
        for dataset in datasets:
            clients[dataset] = client = node_client(market, (nodes or {}).get(dataset), dataset)
            if served(client, dataset)["differential_privacy"] and dp is None:
                raise ConfigError(
                    f"dataset {dataset}'s owner requires differential privacy: train with "
                    'dp={"epsilon": ..., "bounds": {...}} (CLI: --dp-epsilon E --bounds FILE)'
                )
        if dp is not None:
            check_budgets([(clients[d], d) for d in datasets], epsilon)
        for dataset in datasets:
            order, _ = ensure_order(market, dataset, compute_service(market, dataset))
            sites.append(Site(clients[dataset], dataset, order))
        return federated_train(
            sites,
            list(features),
            target,
            rounds=rounds,
            epochs=epochs,
            timeout=timeout,
            algorithm=code,
            on_job=on_job,
            dp=dp,
            classes=classes,
        )
    finally:
        for client in clients.values():
            client.close()


class OwnerClient:
    """A dataset controller at a compute node: pending jobs, review, approve, deny."""

    def __init__(
        self,
        url: str,
        owner: Identity,
        chain_id: int,
        verifying_contract: str,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.owner = owner
        self.chain_id = chain_id
        self.verifying_contract = verifying_contract
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OwnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, action: str, job: int = 0, reason: str = "") -> Any:
        signed = sign_owner_request(
            self.owner,
            self.chain_id,
            action,
            job,
            reason,
            verifying_contract=self.verifying_contract,
        )
        headers = {REQUEST_HEADER: encode_header(signed)}
        try:
            if method == "GET":
                response = self._http.get(f"{self.url}{path}", headers=headers)
            else:
                body = {"reason": reason} if action == "deny" else None
                response = self._http.post(f"{self.url}{path}", headers=headers, json=body)
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"cannot reach the compute node at {self.url}: {exc}", self.url
            ) from None
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

    def cancel(self, job: int) -> dict[str, Any]:
        """Cancel a pending or queued job (on chain; its escrow goes back to the consumer)."""
        result: dict[str, Any] = self._call("POST", f"/owner/jobs/{job}/cancel", "cancel", job)
        return result


class OwnerDatasets:
    """A compute node's :class:`~datagora.compute.stored.DatasetSource`: the datasets its
    operator published, read from the `storage` nodes as their owner reads them."""

    def __init__(self, ledger: Ledger, operator: Identity, storage: list[str]) -> None:
        if not storage:
            raise DatagoraError("a compute node that reads stored datasets needs storage nodes")
        self.market = Marketplace(ledger, Endpoints(list(storage)), operator)

    def compute_offer(self, dataset: int) -> ComputeOffer | None:
        """The compute service in the dataset's metadata (checked against its hash on chain)."""
        meta = self.market.metadata(dataset)
        service = next((s for s in meta.services if s.type == "compute"), None)
        if service is None:
            return None
        return ComputeOffer(service.id, service.differential_privacy)

    def fetch(self, manifest_hash: bytes, dest: Path) -> None:
        """Fetch, verify and decrypt the version with `manifest_hash` into `dest`."""
        self.market.owner_download(manifest_hash, dest)
