"""The owner's agent: follows the ledger and hands key fragments to the proxies.

For every dataset the owner controls, the agent delegates — makes ``threshold``-of-m
key fragments for the consumer's Umbral key, scoped to the dataset's current
version, and sends one to each of the m proxies as a signed delegation — when:

* ``OrderStarted`` (service 0) is seen and the dataset's policy is ``automatic``;
* ``AccessGranted`` is seen (any policy: a grant is the owner's own decision); the
  consumer's key is the one in the matching ``AccessRequested`` event;
* ``DatasetUpdated`` makes a new version: consumers delegated for an older version
  whose order or grant is still valid get fragments for the new one;
* the owner asks directly (``POST /delegations`` with a signed DelegationRequest).

Before delegating it checks that the basis is still valid now (an order that
expired while the agent was down gets nothing). Policies live in
``DATA/policies.json`` (``datagora.agent-policies.v1``, re-read when it changes):
``{"format": "datagora.agent-policies.v1", "default": "automatic",
"datasets": {"7": "approval"}}``. State (event cursor, access requests seen,
delegations made, fragments not yet delivered) is in ``DATA/agent.sqlite``, so a
restarted agent resumes where it stopped and never delegates twice. Fragments
that a proxy did not take (it was down) are kept there and retried every poll;
they are the only key material on the agent's disk, and they open nothing without
the consumer's secret key.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import httpx
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from datagora.bodies import read_capped, why
from datagora.crypto.eip712 import SignedRequest, signed_request_schema, verify_request
from datagora.crypto.errors import MalformedRequest, PreError, RequestRefused
from datagora.crypto.keys import DelegationKeys, Identity
from datagora.crypto.nonces import SqliteNonceStore
from datagora.crypto.pre import dataset_scope, make_kfrags
from datagora.errors import ConfigError, DatagoraError
from datagora.ledger import Ledger
from datagora.ledger.errors import ChainError, ContractRuleError, NotController, NotFound
from datagora.ledger.events import Event, EventReader
from datagora.sharing.directory import (
    HttpProxyDirectory,
    ProxyDirectory,
    RegistryProxyDirectory,
    dataset_proxies,
)
from datagora.sharing.errors import DelegateRevoked, DelegationFailed, SharingError
from datagora.sharing.gate import DEFAULT_SERVICE_ID
from datagora.sharing.requests import ZERO_ADDRESS, DelegationRequest, check_threshold
from datagora.sharing.wire import Domain, KfragDelivery, service_lifespan
from datagora.tls import verify_context

__all__ = [
    "POLICIES_FORMAT",
    "Agent",
    "Delegation",
    "Policy",
    "create_agent_app",
    "delegate",
    "write_policies",
]

_log = logging.getLogger(__name__)
Policy = Literal["automatic", "approval"]
POLICIES_FORMAT: Final = "datagora.agent-policies.v1"
_POLICIES: Final = ("automatic", "approval")
_TIMEOUT: Final = 10.0
MAX_REQUEST_BYTES: Final = 64 * 1024
"""The largest ``POST /delegations`` body (a signed request is well under 2 KiB)."""
PAGE_MAX = 500
"""The most delegations one ``GET /delegations`` returns (``limit``'s upper bound)."""
CURSOR_MAX = 2**63 - 1
"""SQLite's largest rowid: the upper bound of ``GET /delegations``' cursor."""
# Refusals after which retrying the same fragment cannot succeed.
_FINAL: Final = frozenset(
    {"not_controller", "bad_kfrag", "malformed", "wrong_proxy", "batch_exists"}
)


@dataclass(frozen=True)
class Delegation:
    """The outcome of one delegation: which proxies took their fragment, and why others did not."""

    dataset: int
    version: int
    consumer: str
    accepted: list[str]
    failed: dict[str, str] = field(default_factory=dict)


def _put(client: httpx.Client, proxy: str, delivery: KfragDelivery) -> tuple[bool, str, str]:
    """(stored, refusal code, detail) of one delivery."""
    try:
        response = client.put(f"{proxy.rstrip('/')}/kfrags", json=delivery.to_json())
        payload = response.json()
    except httpx.HTTPError as exc:
        return False, "unreachable", type(exc).__name__
    except ValueError:
        return False, "unreachable", f"HTTP {response.status_code}, not JSON"
    if response.status_code == 200:
        return True, "", ""
    if not isinstance(payload, dict):
        return False, "unreachable", f"HTTP {response.status_code}"
    return False, str(payload.get("error", "")), str(payload.get("detail", ""))[:300]


def _deliver(
    ledger: Ledger,
    signer: Identity,
    keys: DelegationKeys,
    dataset: int,
    version: int,
    consumer: str,
    consumer_key: bytes,
    grant: int,
    threshold: int,
    kfrags: dict[str, bytes],
    shares: int,
    batch: bytes,
    directory: ProxyDirectory,
    timeout: float = _TIMEOUT,
) -> dict[str, tuple[bool, str, str]]:
    """Seal each proxy its fragment and send it, concurrently; the outcome per proxy."""
    delegating_key = keys.delegating_public_key(dataset_scope(dataset, version))
    domain = Domain.of(ledger)

    def one(client: httpx.Client, proxy: str, kfrag: bytes) -> tuple[bool, str, str]:
        try:
            info = directory.lookup(proxy)
        except SharingError as exc:
            return False, "unreachable", str(exc)[:300]
        delivery = KfragDelivery.build(
            signer,
            domain,
            proxy=info.address,
            proxy_key=info.umbral_public_key,
            verifying_key=keys.verifying_key,
            dataset=dataset,
            version=version,
            consumer=consumer,
            consumer_key=consumer_key,
            grant=grant,
            threshold=threshold,
            shares=shares,
            batch=batch,
            kfrag=kfrag,
            delegating_key=delegating_key,
        )
        return _put(client, proxy, delivery)

    if not kfrags:
        return {}
    with (
        httpx.Client(timeout=timeout, verify=verify_context()) as client,
        ThreadPoolExecutor(max_workers=len(kfrags)) as pool,
    ):
        futures = {p: pool.submit(one, client, p, k) for p, k in kfrags.items()}
        return {p: f.result() for p, f in futures.items()}


def _check_authority(ledger: Ledger, signer: Identity, owner: str, dataset: int) -> None:
    """The owner controls ``dataset`` and ``signer`` is the owner or its current delegate."""
    controller = ledger.data_nft.controller(dataset)
    if controller != owner:
        raise NotController(f"{owner} does not control dataset {dataset}")
    if signer.address != owner and not ledger.access.is_delegate(owner, signer.address):
        raise DelegateRevoked(
            f"{signer.address} is not (or no longer) an agent key of {owner}: the owner "
            "authorises one with `datagora account authorize-agent`"
        )


def delegate(
    ledger: Ledger,
    owner: Identity,
    dataset: int,
    version: int,
    consumer: str,
    consumer_key: bytes,
    proxies: Sequence[str],
    threshold: int,
    *,
    grant: int = 0,
    timeout: float = _TIMEOUT,
    keys: DelegationKeys | None = None,
    directory: ProxyDirectory | None = None,
) -> Delegation:
    """Make ``threshold``-of-``len(proxies)`` fragments for ``consumer_key`` and give one to
    each proxy, sealed to it, as signed deliveries of dataset ``version``.

    ``owner`` signs the deliveries: the owner itself, or (with ``keys``, the owner's
    :class:`DelegationKeys`) an agent key the owner authorised on chain. ``grant`` is
    the AccessRegistry grant behind it (0: an order). Raises :class:`NotController`
    if the owner does not control the dataset, :class:`DelegateRevoked` if the signer
    is not its delegate, :class:`SharingError` for a threshold of 1 with several
    proxies, and :class:`DelegationFailed` if fewer than ``threshold`` proxies took
    theirs (the returned :class:`Delegation` otherwise says which did not).
    """
    check_threshold(threshold, len(proxies), SharingError)
    keys = keys or owner.delegation_keys()
    _check_authority(ledger, owner, keys.owner, dataset)
    kfrags = make_kfrags(
        keys, consumer_key, threshold, len(proxies), scope=dataset_scope(dataset, version)
    )
    directory = directory or RegistryProxyDirectory(
        ledger, HttpProxyDirectory(ledger.chain.chain_id, timeout), timeout
    )
    outcomes = _deliver(
        ledger, owner, keys, dataset, version, consumer, consumer_key, grant, threshold,
        dict(zip(proxies, kfrags, strict=True)), len(proxies), os.urandom(32), directory,
        timeout,
    )  # fmt: skip
    accepted = [p for p in proxies if outcomes[p][0]]
    failed = {p: f"{o[1]}: {o[2]}" for p, o in outcomes.items() if not o[0]}
    if len(accepted) < threshold:
        raise DelegationFailed(
            f"only {len(accepted)} of {len(proxies)} proxies took their key fragment, "
            f"{threshold} needed: " + "; ".join(f"{p} ({r})" for p, r in failed.items())
        )
    return Delegation(dataset, version, consumer, accepted, failed)


def write_policies(data_dir: Path, default: Policy, datasets: dict[int, Policy]) -> None:
    """Write the agent's policy file (atomically), e.g. before starting it."""
    for policy in (default, *datasets.values()):
        if policy not in _POLICIES:
            raise ConfigError(f"unknown policy {policy!r}: use automatic or approval")
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / "policies.json.tmp"
    tmp.write_text(
        json.dumps(
            {
                "format": POLICIES_FORMAT,
                "default": default,
                "datasets": {str(k): v for k, v in datasets.items()},
            },
            indent=2,
        )
    )
    tmp.replace(data_dir / "policies.json")


def _read_policies(path: Path) -> tuple[Policy, dict[int, Policy]]:
    if not path.exists():
        return "automatic", {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != POLICIES_FORMAT:
            raise ValueError(f"not {POLICIES_FORMAT}")
        default = data.get("default", "automatic")
        datasets = {int(k): v for k, v in dict(data.get("datasets", {})).items()}
        if any(p not in _POLICIES for p in (default, *datasets.values())):
            raise ValueError("a policy is automatic or approval")
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: invalid policy file ({exc})") from None
    return default, datasets


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
  request_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, consumer TEXT NOT NULL,
  consumer_key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS delegations (
  dataset TEXT NOT NULL, version INTEGER NOT NULL, consumer TEXT NOT NULL,
  consumer_key BLOB NOT NULL, basis TEXT NOT NULL, grant_id TEXT NOT NULL,
  threshold INTEGER NOT NULL, accepted TEXT NOT NULL, created INTEGER NOT NULL,
  batch BLOB NOT NULL,
  PRIMARY KEY (dataset, version, consumer, consumer_key));
CREATE TABLE IF NOT EXISTS undelivered (
  dataset TEXT NOT NULL, version INTEGER NOT NULL, consumer TEXT NOT NULL,
  consumer_key BLOB NOT NULL, proxy TEXT NOT NULL, kfrag BLOB NOT NULL,
  PRIMARY KEY (dataset, version, consumer, consumer_key, proxy));
PRAGMA user_version = 2;
"""


class DelegationPage(BaseModel):
    """One page of ``GET /delegations``: the delegations, and the cursor of the next
    page (null on the last)."""

    items: list[dict[str, Any]]
    next: int | None


class Agent:
    """The agent's state and its event follower (``start``/``stop`` run it in a thread)."""

    def __init__(
        self,
        ledger: Ledger,
        owner: Identity,
        proxies: Sequence[str],
        threshold: int,
        data_dir: Path,
        poll_interval: float = 1.0,
        *,
        service_id: int = DEFAULT_SERVICE_ID,
        keys: DelegationKeys | None = None,
        directory: ProxyDirectory | None = None,
    ) -> None:
        """``owner`` is the account the agent signs with: the agent's own key (an
        authorised delegate) with ``keys``, the owner's :class:`DelegationKeys`; or,
        without ``keys``, the owner itself."""
        if not proxies:
            raise ConfigError("an agent needs at least one proxy")
        check_threshold(threshold, len(proxies), ConfigError)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = ledger
        self.signer = owner
        self.keys = keys or owner.delegation_keys()
        self.owner_address = self.keys.owner
        self.directory = directory or RegistryProxyDirectory(
            ledger, HttpProxyDirectory(ledger.chain.chain_id)
        )
        self.proxies = list(proxies)
        self.threshold = threshold
        self.poll_interval = poll_interval
        self.service_id = service_id
        self._policy_path = data_dir / "policies.json"
        self._policy_mtime = -1.0
        self._policies: tuple[Policy, dict[int, Policy]] = ("automatic", {})
        self._load_policies()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            data_dir / "agent.sqlite", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        if self._db.execute("PRAGMA user_version").fetchone()[0] == 1:
            # Schema 1 had no fragment batches: its delegations keep a batch of their own.
            self._db.executescript(
                "ALTER TABLE delegations ADD COLUMN batch BLOB NOT NULL DEFAULT x'';"
                "PRAGMA user_version = 2;"
            )
        self._db.executescript(_SCHEMA)
        self.nonces = SqliteNonceStore(data_dir / "nonces.sqlite")
        self._reader = EventReader(ledger.chain, ledger.deployment.contracts)
        # Datatokens of datasets created before the cursor are not re-learned from events.
        count = ledger.data_nft.dataset_count()
        self._reader.add_datatokens([ledger.data_nft.datatoken_of(d) for d in range(1, count + 1)])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ policies

    def _load_policies(self) -> None:
        try:
            mtime = self._policy_path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime != self._policy_mtime:
            self._policies = _read_policies(self._policy_path)
            self._policy_mtime = mtime

    def policy(self, dataset: int) -> Policy:
        default, datasets = self._policies
        return datasets.get(dataset, default)

    # ------------------------------------------------------------ state

    @property
    def cursor(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = 'cursor'").fetchone()
        return int(row[0]) if row else self.ledger.deployment.start_block

    def delegations(
        self, limit: int = PAGE_MAX, after: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` delegations made after the one at cursor `after` (0: from the
        first), in the order they were made, and the cursor of the last one returned
        (public facts only: no fragment)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rowid, dataset, version, consumer, basis, grant_id, accepted, created "
                "FROM delegations WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            ).fetchall()
        page = [
            {
                "dataset": int(r[1]),
                "version": r[2],
                "consumer": r[3],
                "basis": r[4],
                "grant": int(r[5]),
                "accepted": json.loads(r[6]),
                "created": r[7],
            }
            for r in rows
        ]
        return page, int(rows[-1][0]) if rows else after

    def delegation_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM delegations").fetchone()[0])

    def undelivered_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM undelivered").fetchone()[0])

    # ------------------------------------------------------------ delegating

    def proxies_for(self, dataset: int) -> tuple[list[str], int]:
        """The proxy endpoints and threshold to delegate `dataset` to: those its
        controller chose on chain (``ProxySets``), else this agent's own."""
        chosen = dataset_proxies(self.ledger, dataset)
        if chosen is None:
            return list(self.proxies), self.threshold
        return chosen

    def delegate_once(
        self,
        dataset: int,
        version: int,
        consumer: str,
        consumer_key: bytes,
        basis: str,
        grant: int = 0,
        threshold: int | None = None,
    ) -> Delegation:
        """Delegate unless this (dataset, version, consumer, key) was delegated before."""
        proxies, chosen_threshold = self.proxies_for(dataset)
        threshold = threshold or chosen_threshold
        check_threshold(threshold, len(proxies), SharingError)
        with self._lock:
            row = self._db.execute(
                "SELECT accepted FROM delegations WHERE dataset = ? AND version = ? "
                "AND consumer = ? AND consumer_key = ?",
                (str(dataset), version, consumer, consumer_key),
            ).fetchone()
            if row is not None:
                return Delegation(dataset, version, consumer, json.loads(row[0]))
            _check_authority(self.ledger, self.signer, self.owner_address, dataset)
            kfrags = make_kfrags(
                self.keys,
                consumer_key,
                threshold,
                len(proxies),
                scope=dataset_scope(dataset, version),
            )
            by_proxy = dict(zip(proxies, kfrags, strict=True))
            batch = os.urandom(32)
            outcomes = _deliver(
                self.ledger, self.signer, self.keys, dataset, version, consumer, consumer_key,
                grant, threshold, by_proxy, len(proxies), batch, self.directory,
            )  # fmt: skip
            accepted = [p for p in proxies if outcomes[p][0]]
            failed = {p: f"{o[1]}: {o[2]}" for p, o in outcomes.items() if not o[0]}
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO delegations VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        str(dataset), version, consumer, consumer_key, basis, str(grant),
                        threshold, json.dumps(accepted), int(time.time()), batch,
                    ),
                )  # fmt: skip
                for proxy, (ok, code, _) in outcomes.items():
                    if not ok and code not in _FINAL:
                        self._db.execute(
                            "INSERT OR REPLACE INTO undelivered VALUES (?,?,?,?,?,?)",
                            (str(dataset), version, consumer, consumer_key, proxy, by_proxy[proxy]),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if failed:
            _log.warning(
                "dataset %s v%s for %s: %d of %d proxies did not take their fragment (%s)",
                dataset, version, consumer, len(failed), len(proxies),
                "; ".join(f"{p}: {r}" for p, r in failed.items()),
            )  # fmt: skip
        return Delegation(dataset, version, consumer, accepted, failed)

    def _retry_undelivered(self) -> None:
        with self._lock:
            rows = self._db.execute(
                "SELECT u.dataset, u.version, u.consumer, u.consumer_key, u.proxy, u.kfrag, "
                "d.grant_id, d.threshold, d.accepted, d.batch FROM undelivered u "
                "JOIN delegations d USING (dataset, version, consumer, consumer_key)"
            ).fetchall()
            for row in rows:
                dataset, version, consumer, key, proxy, kfrag, grant, threshold, acc, batch = row
                outcome = _deliver(
                    self.ledger, self.signer, self.keys, int(dataset), version, consumer, key,
                    int(grant), threshold, {proxy: kfrag}, len(self.proxies_for(int(dataset))[0]),
                    bytes(batch) or bytes(32), self.directory,
                )[proxy]  # fmt: skip
                ok, code, _ = outcome
                if not ok and code not in _FINAL:
                    continue
                accepted = json.loads(acc) + ([proxy] if ok else [])
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "DELETE FROM undelivered WHERE dataset = ? AND version = ? AND consumer = ? "
                    "AND consumer_key = ? AND proxy = ?",
                    (dataset, version, consumer, key, proxy),
                )
                self._db.execute(
                    "UPDATE delegations SET accepted = ? WHERE dataset = ? AND version = ? "
                    "AND consumer = ? AND consumer_key = ?",
                    (json.dumps(accepted), dataset, version, consumer, key),
                )
                self._db.execute("COMMIT")

    # ------------------------------------------------------------ following the ledger

    def _controls(self, dataset: int) -> bool:
        return self.ledger.data_nft.controller(dataset) == self.owner_address

    def _handle(self, event: Event) -> None:
        name = event.name
        if name == "AccessRequested":
            with self._lock:
                self._db.execute(
                    "INSERT OR IGNORE INTO requests VALUES (?,?,?,?)",
                    (
                        str(event["request_id"]),
                        str(event["dataset"]),
                        str(event["consumer"]),
                        bytes(event["consumer_key"]),
                    ),
                )
            return
        if name not in ("OrderStarted", "AccessGranted", "DatasetUpdated"):
            return
        dataset = int(event["dataset"])
        if not self._controls(dataset):
            return
        version = self.ledger.data_nft.get_dataset(dataset).version
        if name == "OrderStarted":
            consumer = str(event["consumer"])
            if (
                int(event["service_id"]) != self.service_id
                or self.policy(dataset) != "automatic"
                or not self.ledger.datatoken(dataset).has_valid_order(consumer, self.service_id)
            ):
                return
            self._try(dataset, version, consumer, bytes(event["consumer_key"]), "order", 0)
        elif name == "AccessGranted":
            request_id = int(event["request_id"])
            with self._lock:
                row = self._db.execute(
                    "SELECT consumer, consumer_key FROM requests WHERE request_id = ?",
                    (str(request_id),),
                ).fetchone()
            if row is None or not self.ledger.access.has_access(dataset, row[0]):
                return
            self._try(dataset, version, row[0], row[1], "grant", request_id)
        else:
            self._carry_over(dataset, version)

    def _carry_over(self, dataset: int, version: int) -> None:
        """A new version: delegate it to consumers of older versions still entitled."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT consumer, consumer_key, basis, grant_id FROM delegations "
                "WHERE dataset = ? AND version < ?",
                (str(dataset), version),
            ).fetchall()
        token = self.ledger.datatoken(dataset)
        for consumer, key, basis, grant in rows:
            if token.has_valid_order(consumer, self.service_id) or self.ledger.access.has_access(
                dataset, consumer
            ):
                self._try(dataset, version, consumer, key, basis, int(grant))

    def _try(
        self, dataset: int, version: int, consumer: str, key: bytes, basis: str, grant: int
    ) -> None:
        try:
            self.delegate_once(dataset, version, consumer, key, basis, grant)
        except PreError:
            _log.warning(
                "dataset %s: %s gave no valid Umbral key; not delegated", dataset, consumer
            )
        except DelegateRevoked as exc:
            _log.warning("dataset %s: not delegated to %s: %s", dataset, consumer, exc)

    def poll_once(self) -> int:
        """Handle the events since the cursor, retry undelivered fragments; returns events seen."""
        try:
            self._load_policies()
        except ConfigError as exc:
            _log.warning("%s; keeping the previous policies", exc)
        start = self.cursor
        head = self.ledger.chain.block_number
        seen = 0
        if head >= start:
            for event in self._reader.read(start, head):
                self._handle(event)
                seen += 1
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO state VALUES ('cursor', ?)", (str(head + 1),)
                )
        self._retry_undelivered()
        return seen

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except DatagoraError as exc:
                _log.warning("agent poll failed: %s", exc)
            self._stop.wait(self.poll_interval)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.nonces.close()
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ owner's direct requests

    def handle_request(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /delegations``: a DelegationRequest signed by the owner."""
        try:
            signed = SignedRequest.from_json(json.loads(raw))
            domain = Domain.of(self.ledger)
            checked = verify_request(
                signed,
                domain.chain_id,
                int(time.time()),
                self.nonces,
                expect=DelegationRequest,
                verifying_contract=domain.verifying_contract,
            )
        except ValueError:
            return 422, {"error": "malformed", "detail": "the body is not JSON"}
        except MalformedRequest as exc:
            return 422, {"error": "malformed", "detail": str(exc)}
        except RequestRefused as exc:
            return 401, {"error": "bad_signature", "detail": str(exc)}
        req = checked.request
        if checked.signer != self.owner_address:
            return 403, {
                "error": "not_owner",
                "detail": f"this agent acts for {self.owner_address}",
            }
        if req.proxy != ZERO_ADDRESS:
            return 422, {
                "error": "malformed",
                "detail": "a request to the agent names no proxy (the zero address)",
            }
        proxies = self.proxies_for(req.dataset)[0]
        if req.shares != len(proxies):
            return 422, {
                "error": "malformed",
                "detail": f"dataset {req.dataset} has {len(proxies)} proxies, not {req.shares}",
            }
        try:
            result = self.delegate_once(
                req.dataset, req.version, req.consumer, req.consumer_key, "owner", req.grant,
                req.threshold,
            )  # fmt: skip
        except NotController as exc:
            return 403, {"error": "not_controller", "detail": str(exc)}
        except DelegateRevoked as exc:
            return 403, {"error": "not_delegate", "detail": str(exc)}
        except NotFound:
            return 404, {"error": "no_dataset", "detail": f"no dataset {req.dataset} on chain"}
        except ContractRuleError as exc:  # the ledger refused a read of this dataset
            return 403, {"error": "refused", "detail": str(exc)}
        except ChainError:
            return 503, {
                "error": "chain_unavailable",
                "detail": "the agent cannot read the ledger now",
            }
        except (PreError, SharingError) as exc:
            return 422, {"error": "malformed", "detail": str(exc)}
        return 200, {"accepted": result.accepted, "failed": result.failed}


def create_agent_app(
    ledger: Ledger,
    owner: Identity,
    proxies: list[str],
    threshold: int,
    data_dir: Path,
    poll_interval: float = 1.0,
    *,
    service_id: int = DEFAULT_SERVICE_ID,
    keys: DelegationKeys | None = None,
    directory: ProxyDirectory | None = None,
) -> FastAPI:
    """The agent's HTTP app; its lifespan runs the ledger follower in a thread.

    ``owner`` is the account it signs with (see :class:`Agent`). ``GET /health``,
    ``GET /delegations?limit=&cursor=`` (what was delegated, a page at a time, no key
    material; follow ``next`` until it is null), ``POST /delegations``
    (a DelegationRequest signed by the owner).
    """
    agent = Agent(
        ledger, owner, proxies, threshold, data_dir, poll_interval, service_id=service_id,
        keys=keys, directory=directory,
    )  # fmt: skip

    app = FastAPI(title="datagora agent", lifespan=service_lifespan(agent))
    app.state.agent = agent

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "role": "agent",
            "owner": agent.owner_address,
            "signer": agent.signer.address,
            "proxies": agent.proxies,
            "threshold": agent.threshold,
            "cursor": agent.cursor,
            "delegations": agent.delegation_count(),
            "undelivered": agent.undelivered_count(),
        }

    @app.get(
        "/delegations",
        summary="What was delegated, a page at a time (no key material)",
        responses={422: why("`limit` or `cursor` out of range, or not an integer.")},
    )
    def delegations(
        limit: Annotated[
            int, Query(ge=1, le=PAGE_MAX, description="The most delegations to return.")
        ] = 100,
        cursor: Annotated[
            int,
            Query(
                ge=0,
                le=CURSOR_MAX,
                description="The `next` of the previous page; 0 (or absent) for the first.",
            ),
        ] = 0,
    ) -> DelegationPage:
        items, last = agent.delegations(limit, cursor)
        # A full page may be followed by more; a short one is the last.
        return DelegationPage(items=items, next=last if len(items) == limit else None)

    @app.post(
        "/delegations",
        summary="Delegate key fragments to this agent's proxies now",
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "A DelegationRequest signed by the owner, naming the zero "
                f"address as its proxy; at most {MAX_REQUEST_BYTES} bytes.",
                "content": {
                    "application/json": {"schema": signed_request_schema(DelegationRequest)}
                },
            }
        },
        responses={
            200: {"description": "The proxies that took a fragment and those that failed."},
            401: why("The signature is bad, expired or replayed."),
            403: why(
                "Not signed by this agent's owner, or the owner no longer controls "
                "the dataset (or revoked this agent)."
            ),
            404: why("No such dataset on chain."),
            413: why(f"The body is larger than {MAX_REQUEST_BYTES} bytes."),
            422: why("Not JSON, not a signed DelegationRequest, or not one for this agent."),
            503: why("The agent cannot read the ledger now."),
        },
    )
    async def post_delegation(request: Request) -> JSONResponse:
        raw = await read_capped(request, MAX_REQUEST_BYTES)
        if raw is None:
            detail = f"the body is larger than {MAX_REQUEST_BYTES} bytes"
            return JSONResponse({"error": "too_large", "detail": detail}, status_code=413)
        status, payload = await run_in_threadpool(agent.handle_request, raw)
        return JSONResponse(payload, status_code=status)

    return app
