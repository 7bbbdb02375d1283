"""Compute jobs on an owner's node: admission, review, the worker, results, the chain record.

:class:`JobService` is the node's logic without HTTP (``node.py`` serves it). A job:

1. arrives as a signed :class:`~datagora.compute.requests.ComputeRequest` with the
   algorithm's code and its parameters; the node checks the signature, that the
   code and parameters hash to what was signed, and that the named order is the
   consumer's valid on-chain order for this dataset's compute service (the order
   also carries the consumer's Umbral key, to which results are encrypted);
2. on a dataset requiring DP, its declared epsilon and bounds are checked, the
   epsilon must fit in the dataset's budget (shared by every consumer; optionally
   capped per consumer), and an algorithm the owner trusts by hash must be one of
   the node's DP algorithms (:func:`~datagora.compute.algorithms.check_dp_algorithm`); other
   code waits for review;
3. is recorded on chain (``ComputeRegistry.record_job``): approved at once when the
   owner trusts the algorithm's hash for the dataset, pending review otherwise;
4. runs in the :class:`~datagora.compute.sandbox.Sandbox` on a bounded worker pool;
   its output and logs pass the :mod:`~datagora.compute.policy`, are encrypted to
   the consumer, and the SHA-256 of the sealed result is recorded on chain
   (``complete``), with the epsilon spent.

The owner reviews pending jobs (:meth:`JobService.review` shows the code) and
approves or denies them; the decision goes on chain (``decide``).

A job the owner trusts may be *held* (``ComputeRequest.hold`` seconds): admitted,
recorded and its epsilon reserved, it waits for its consumer's ``start`` and is
cancelled (reservation released, escrow refunded) if none comes in time. A federated
round holds a job at every site first and starts them only once all are admitted, so
a site that refuses (its budget spent by a racing consumer) costs the others nothing.

Queues are bounded: a dataset holds at most ``max_jobs_per_dataset`` open jobs
(pending review, held, queued or running) and a consumer at most
``max_jobs_per_consumer`` on the node; the next submission is refused with 429
before anything is recorded on chain, and is accepted again once a job finishes
or is denied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import umbral_pre

from datagora.compute.algorithms import check_dp_algorithm, dp_review_note
from datagora.compute.dp import BudgetStore, charges_on_chain, check_dp_params
from datagora.compute.errors import ComputeError, JobNotFound, JobRefused
from datagora.compute.owner import OwnerJobRequest, reason_hash
from datagora.compute.policy import (
    OutputPolicy,
    RowIndex,
    archive_output,
    check_logs,
    check_output,
)
from datagora.compute.requests import ComputeRequest, JobRequest
from datagora.compute.results import seal_result
from datagora.compute.sandbox import Limits, Sandbox
from datagora.compute.stored import StoredDataset, StoredDatasets, private_dir
from datagora.crypto.eip712 import SignedRequest, verify_request
from datagora.crypto.errors import RequestRefused
from datagora.crypto.keys import Identity
from datagora.crypto.nonces import SqliteNonceStore
from datagora.errors import DatagoraError
from datagora.ledger import EscrowLocked, EscrowRecord, EscrowState, JobStatus, Ledger
from datagora.ledger.errors import ChainError, ContractRuleError

__all__ = [
    "ComputeDataset",
    "JobInfo",
    "JobService",
    "Review",
    "algorithm_hash",
    "canonical_params",
    "job_bytes",
    "params_hash",
]

log = logging.getLogger("datagora.compute")

MAX_ALGORITHM_BYTES: Final = 1 << 20
MAX_PARAMS_BYTES: Final = 1 << 20
STATES: Final = (
    "pending",
    "held",
    "queued",
    "running",
    "succeeded",
    "failed",
    "denied",
    "cancelled",
)
_ZERO: Final = bytes(32)
OPEN_STATES: Final = ("pending", "held", "queued", "running")
MAX_JOBS_PER_DATASET: Final = 32
MAX_JOBS_PER_CONSUMER: Final = 16


def _umbral_key(key: bytes) -> bytes:
    try:
        umbral_pre.PublicKey.from_compressed_bytes(key)
    except (ValueError, TypeError):
        raise JobRefused(
            "the order (or escrow) carries no Umbral public key to encrypt results to: order "
            "or lock with consumer_key=identity.umbral_public_key",
            403,
        ) from None
    return key


def canonical_params(params: Any) -> bytes:
    """Parameters as signed: JSON, sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def params_hash(params: Any) -> bytes:
    """SHA-256 of :func:`canonical_params`."""
    return hashlib.sha256(canonical_params(params)).digest()


def algorithm_hash(code: bytes) -> bytes:
    """SHA-256 of an algorithm file's bytes (what goes on chain)."""
    return hashlib.sha256(code).digest()


def job_bytes(job: int) -> bytes:
    """The job id as the 32 bytes a :class:`JobRequest` names (uint256, big-endian)."""
    return job.to_bytes(32, "big")


@dataclass(frozen=True, slots=True)
class ComputeDataset:
    """A dataset this node computes on: its plaintext file and the owner's policy."""

    path: Path
    version: int = 1
    service_id: int = 1
    differential_privacy: bool = False
    epsilon_budget: float = 0.0
    """The dataset's budget, shared by every consumer, when ``differential_privacy`` is on."""
    consumer_budget: float = 0.0
    """What one consumer may spend of it (0: no cap beyond the dataset's budget)."""


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job's public status (no data, no key)."""

    job: int
    dataset: int
    consumer: str
    algorithm: str
    state: str
    reason: str
    result_hash: str
    epsilon: float
    submitted: float
    finished: float

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "dataset": self.dataset,
            "consumer": self.consumer,
            "algorithm": self.algorithm,
            "state": self.state,
            "reason": self.reason,
            "result_hash": self.result_hash,
            "epsilon": self.epsilon,
            "submitted": self.submitted,
            "finished": self.finished,
        }


@dataclass(frozen=True, slots=True)
class Review:
    """What the owner reads before deciding: the code, the parameters, who asks."""

    job: JobInfo
    code: str
    params: Any
    differential_privacy: dict[str, Any] | None = None
    """On a dataset that requires DP: whether the node enforces it for this code
    (``enforced``) and a ``note`` saying what that means; None elsewhere."""


class _Store:
    """The node's job table (SQLite) and per-job files under ``data_dir/jobs/<id>``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            data_dir / "jobs.db", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS jobs ("
            " job INTEGER PRIMARY KEY, dataset INTEGER NOT NULL, consumer TEXT NOT NULL,"
            " consumer_key BLOB NOT NULL, algorithm TEXT NOT NULL, state TEXT NOT NULL,"
            " reason TEXT NOT NULL DEFAULT '', result_hash TEXT NOT NULL DEFAULT '',"
            " epsilon REAL NOT NULL DEFAULT 0, submitted REAL NOT NULL,"
            " finished REAL NOT NULL DEFAULT 0);"
            "PRAGMA user_version=1;"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "hold_until" not in columns:  # a held job's deadline to be started (Unix s)
            self._db.execute("ALTER TABLE jobs ADD COLUMN hold_until REAL NOT NULL DEFAULT 0")

    def add(
        self,
        info: JobInfo,
        consumer_key: bytes,
        code: bytes,
        params: Any,
        pin: StoredDataset | None = None,
    ) -> None:
        folder = self.dir / str(info.job)
        folder.mkdir(mode=0o700, exist_ok=True)
        (folder / "algorithm.py").write_bytes(code)
        (folder / "params.json").write_bytes(canonical_params(params))
        if pin is not None:
            doc = {
                "dataset": pin.dataset,
                "version": pin.version,
                "manifest_hash": pin.manifest_hash.hex(),
                "service_id": pin.service_id,
                "differential_privacy": pin.differential_privacy,
                "epsilon_budget": pin.epsilon_budget,
                "consumer_budget": pin.consumer_budget,
            }
            (folder / "dataset.json").write_text(json.dumps(doc, sort_keys=True))
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (job, dataset, consumer, consumer_key, algorithm, state,"
                " epsilon, submitted) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.job,
                    info.dataset,
                    info.consumer,
                    consumer_key,
                    info.algorithm,
                    info.state,
                    info.epsilon,
                    info.submitted,
                ),
            )

    def get(self, job: int) -> tuple[JobInfo, bytes]:
        with self._lock:
            row = self._db.execute(
                "SELECT job, dataset, consumer, algorithm, state, reason, result_hash, epsilon,"
                " submitted, finished, consumer_key FROM jobs WHERE job = ?",
                (job,),
            ).fetchone()
        if row is None:
            raise JobNotFound(f"this node has no job {job}")
        return JobInfo(*row[:10]), bytes(row[10])

    def set(self, job: int, **fields: Any) -> None:
        names = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {names} WHERE job = ?", (*fields.values(), job))

    def expired_holds(self, now: float) -> list[int]:
        """Held jobs whose consumer did not start them in time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job FROM jobs WHERE state = 'held' AND hold_until <= ? ORDER BY job",
                (now,),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def by_state(self, state: str) -> list[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT job FROM jobs WHERE state = ? ORDER BY job", (state,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def open_jobs(self, dataset: int, consumer: str) -> tuple[int, int]:
        """Jobs pending, queued or running: (on `dataset`, by `consumer` on any dataset)."""
        marks = ", ".join("?" * len(OPEN_STATES))
        with self._lock:
            row = self._db.execute(
                f"SELECT COALESCE(SUM(dataset = ?), 0), COALESCE(SUM(lower(consumer) = ?), 0)"
                f" FROM jobs WHERE state IN ({marks})",
                (dataset, consumer.lower(), *OPEN_STATES),
            ).fetchone()
        return int(row[0]), int(row[1])

    def code(self, job: int) -> bytes:
        return (self.dir / str(job) / "algorithm.py").read_bytes()

    def params(self, job: int) -> Any:
        return json.loads((self.dir / str(job) / "params.json").read_bytes())

    def pin(self, job: int) -> StoredDataset | None:
        """The stored dataset version the job was admitted on (None: a configured file)."""
        path = self.dir / str(job) / "dataset.json"
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        return StoredDataset(
            int(doc["dataset"]),
            int(doc["version"]),
            bytes.fromhex(doc["manifest_hash"]),
            int(doc["service_id"]),
            bool(doc["differential_privacy"]),
            float(doc["epsilon_budget"]),
            float(doc.get("consumer_budget", 0.0)),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JobService:
    """An owner's compute node: takes signed jobs, runs approved ones, serves results.

    ``operator`` signs the node's transactions: the dataset's controller, or an
    account the controller named with ``ledger.compute.set_operator``.
    ``datasets`` maps dataset id → :class:`ComputeDataset` (or just a path: version
    1, service 1, no DP): plaintext files configured on the node. ``stored`` serves
    every other dataset the operator controls as its owner would read it: fetched
    from the storage nodes and decrypted per job (:mod:`~datagora.compute.stored`).
    ``chain_lock`` serialises this node's use of ``ledger`` (pass one lock to every
    node sharing an in-process embedded chain). ``max_jobs_per_dataset`` and
    ``max_jobs_per_consumer`` bound the open jobs (pending, queued or running).
    """

    def __init__(
        self,
        ledger: Ledger,
        operator: Identity,
        datasets: Mapping[int, ComputeDataset | Path | str],
        data_dir: Path,
        *,
        sandbox: Sandbox | None = None,
        limits: Limits | None = None,
        policy: OutputPolicy | None = None,
        workers: int = 1,
        allow_weak_sandbox: bool = False,
        chain_lock: AbstractContextManager[Any] | None = None,
        clock: Callable[[], float] = time.time,
        stored: StoredDatasets | None = None,
        max_jobs_per_dataset: int = MAX_JOBS_PER_DATASET,
        max_jobs_per_consumer: int = MAX_JOBS_PER_CONSUMER,
    ) -> None:
        if max_jobs_per_dataset < 1 or max_jobs_per_consumer < 1:
            raise ValueError("the job caps must be at least 1")
        self.max_jobs_per_dataset = max_jobs_per_dataset
        self.max_jobs_per_consumer = max_jobs_per_consumer
        self.ledger = ledger
        self.operator = operator
        self.stored = stored
        self.datasets = {
            int(d): v if isinstance(v, ComputeDataset) else ComputeDataset(Path(v))
            for d, v in datasets.items()
        }
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.data_dir / "results").mkdir(exist_ok=True, mode=0o700)
        hide = [self.data_dir, *{d.path.resolve().parent for d in self.datasets.values()}]
        self.sandbox = sandbox or Sandbox(limits, allow_weak=allow_weak_sandbox, hide=hide)
        self.policy = policy or OutputPolicy()
        self.chain_id = ledger.chain.chain_id
        # Requests are signed for this deployment: one signed for another ComputeRegistry
        # on the same chain (a test network beside the real one) is refused.
        self.verifying_contract = ledger.compute.address
        self._chain: AbstractContextManager[Any] = chain_lock or threading.RLock()
        self._admit = threading.Lock()
        self._store = _Store(self.data_dir)
        self._nonces = SqliteNonceStore(self.data_dir / "nonces.db")
        self.budgets = BudgetStore(self.data_dir / "budget.db")
        # What the chain says was spent counts, whatever budget.db holds (lost, or older).
        with self._chain:
            self.budgets.rebuild(charges_on_chain(ledger))
        self._clock = clock
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._indexes: dict[Path, tuple[float, RowIndex]] = {}
        self._stored_indexes: dict[bytes, RowIndex] = {}
        # A job left running by a crash cannot be resumed: fail it; requeue the queued.
        for job in self._store.by_state("running"):
            self._finish(job, False, _ZERO, "the node restarted while the job ran", 0.0)
        for job in self._store.by_state("queued"):
            self._queue.put(job)
        self._workers = [
            threading.Thread(target=self._work, name=f"compute-worker-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for worker in self._workers:
            worker.start()
        self._closing = threading.Event()
        self._hold_poll = 0.5
        self._holds = threading.Thread(
            target=self._release_holds, name="compute-holds", daemon=True
        )
        self._holds.start()

    # ------------------------------------------------------------ admission

    def submit(self, signed: SignedRequest[Any], algorithm: bytes, params: Any) -> JobInfo:
        """Admit a job (see the module docstring); raises :class:`JobRefused` with why."""
        if len(algorithm) > MAX_ALGORITHM_BYTES:
            raise JobRefused(f"the algorithm is larger than {MAX_ALGORITHM_BYTES} bytes", 413)
        try:
            body = canonical_params(params)
        except (TypeError, ValueError):
            raise JobRefused("params must be JSON (no NaN or infinity)", 400) from None
        if len(body) > MAX_PARAMS_BYTES:
            raise JobRefused(f"params are larger than {MAX_PARAMS_BYTES} bytes", 413)
        if not isinstance(signed.request, ComputeRequest):
            raise JobRefused("POST /jobs takes a signed ComputeRequest", 400)
        # Checked before the signature so that a mismatched body does not use up the nonce.
        if algorithm_hash(algorithm) != signed.request.algorithm:
            raise JobRefused("the algorithm's SHA-256 is not the one signed", 400)
        if hashlib.sha256(body).digest() != signed.request.params:
            raise JobRefused("the parameters' SHA-256 (canonical JSON) is not the one signed", 400)
        try:
            verified = verify_request(
                signed,
                self.chain_id,
                int(self._clock()),
                self._nonces,
                expect=ComputeRequest,
                verifying_contract=self.verifying_contract,
            )
        except RequestRefused as exc:
            raise JobRefused(str(exc), 401) from None
        req: ComputeRequest = verified.request
        dataset = self._dataset(req.dataset)
        pin = dataset if isinstance(dataset, StoredDataset) else None
        epsilon = 0.0
        cap = dataset.consumer_budget
        if dataset.differential_privacy:
            epsilon, _ = check_dp_params(params)
        with self._admit:
            # Before the order is read or anything goes on chain: a burst costs the node
            # one SQLite count per request, and the consumer nothing but a retry.
            self._check_capacity(req.dataset, req.consumer)
            consumer_key, escrow = self._check_order(req, dataset)
            with self._chain:
                # The dataset's access condition for the compute service (docs/ledger.md),
                # with the order or escrow just checked as its `order` term.
                why = self.ledger.access.condition_failure(
                    req.dataset, dataset.service_id, req.consumer, ordered=True
                )
            if why is not None:
                raise JobRefused(f"the access condition of dataset {req.dataset} fails: {why}", 403)
            if dataset.differential_privacy:
                self.budgets.check(req.dataset, req.consumer, epsilon, dataset.epsilon_budget, cap)
            with self._chain:
                if dataset.differential_privacy or req.hold:
                    # Read with the recording, under one lock: record_job approves by the
                    # same on-chain trust.
                    trusted = self.ledger.compute.is_trusted(req.dataset, req.algorithm)
                    if dataset.differential_privacy:
                        check_dp_algorithm(req.algorithm, trusted)
                    if req.hold and not trusted:
                        raise JobRefused(
                            "a held job must be one the owner trusts (approved at once): "
                            "code waiting for the owner's review cannot be held",
                            409,
                        )
                job, _ = self.ledger.compute.record_job(
                    self.operator.account,
                    req.dataset,
                    dataset.version,
                    dataset.service_id,
                    req.consumer,
                    req.algorithm,
                    req.params,
                    escrow,
                )
                status = self.ledger.compute.job(job).status
            if dataset.differential_privacy:
                self.budgets.reserve(
                    job, req.dataset, req.consumer, epsilon, dataset.epsilon_budget, cap
                )
            state = "queued" if status == JobStatus.APPROVED else "pending"
            reason = "" if state == "queued" else "waiting for the owner's review"
            if state == "queued" and req.hold:
                state, reason = "held", f"held for the consumer's start (at most {req.hold} s)"
            now = self._clock()
            info = JobInfo(
                job,
                req.dataset,
                req.consumer,
                req.algorithm.hex(),
                state,
                reason,
                "",
                epsilon,
                now,
                0.0,
            )
            self._store.add(info, consumer_key, algorithm, params, pin)
            if state == "held":
                self._store.set(job, hold_until=now + req.hold)
        log.info("job %d on dataset %d: %s", job, req.dataset, state)
        if state == "queued":
            self._queue.put(job)
        return info

    def _check_capacity(self, dataset: int, consumer: str) -> None:
        on_dataset, by_consumer = self._store.open_jobs(dataset, consumer)
        if by_consumer >= self.max_jobs_per_consumer:
            raise JobRefused(
                f"job queue full: {consumer} already has {by_consumer} open jobs on this node "
                f"(at most {self.max_jobs_per_consumer}); retry when one finishes",
                429,
            )
        if on_dataset >= self.max_jobs_per_dataset:
            raise JobRefused(
                f"job queue full: dataset {dataset} already has {on_dataset} open jobs "
                f"(at most {self.max_jobs_per_dataset}); retry later",
                429,
            )

    def _dataset(self, dataset: int) -> ComputeDataset | StoredDataset:
        """The configured file, else the stored dataset's current version and policy."""
        configured = self.datasets.get(dataset)
        if configured is not None:
            return configured
        if self.stored is None:
            raise JobRefused(f"this node does not compute on dataset {dataset}", 404)
        with self._chain:
            return self.stored.describe(dataset)

    def _check_order(
        self, req: ComputeRequest, dataset: ComputeDataset | StoredDataset
    ) -> tuple[bytes, int]:
        """The consumer's Umbral key and the escrow paying for the job (0: paid by its
        valid compute order), or :class:`JobRefused`.

        ``req.order`` names the transaction that pays: an order of the compute service
        (a window of any number of jobs) or a ``ComputeRegistry.lock`` of the per-job
        price for exactly this algorithm and these parameters."""
        with self._chain:
            try:
                receipt = self.ledger.chain.transaction_receipt(req.order)
            except ChainError:
                raise JobRefused("the order transaction was not found on chain", 403) from None
            try:
                lock = self.ledger.compute.lock_from_receipt(receipt)
            except ValueError:
                lock = None
            if lock is not None:
                escrow = self.ledger.compute.escrow(lock.escrow)
                key = self._check_lock(req, lock, escrow)
                return key, lock.escrow
            token = self.ledger.datatoken(req.dataset)
            try:
                order = token.order_from_receipt(receipt)
            except ValueError:
                raise JobRefused(
                    f"the transaction is not an order of dataset {req.dataset}'s datatoken "
                    "(nor an escrow locked for the job)",
                    403,
                ) from None
            valid = token.has_valid_order(req.consumer, dataset.service_id)
        if order.consumer != req.consumer:
            raise JobRefused("the order was made for another consumer", 403)
        if order.service_id != dataset.service_id:
            raise JobRefused(
                f"the order is for service {order.service_id}, not the compute service "
                f"{dataset.service_id}",
                403,
            )
        if not valid:
            raise JobRefused("the consumer has no valid compute order now: order again", 403)
        return _umbral_key(order.consumer_key), 0

    def _check_lock(self, req: ComputeRequest, lock: EscrowLocked, escrow: EscrowRecord) -> bytes:
        if lock.consumer != req.consumer:
            raise JobRefused("the escrow was locked by another consumer", 403)
        if lock.dataset != req.dataset:
            raise JobRefused(f"the escrow pays for dataset {lock.dataset}, not this one", 403)
        if (lock.algorithm, lock.params) != (req.algorithm, req.params):
            raise JobRefused("the escrow pays for another algorithm or other parameters", 403)
        if escrow.state != EscrowState.LOCKED or escrow.job != 0:
            raise JobRefused(
                f"escrow {lock.escrow} was already used or settled: lock the price again", 403
            )
        if escrow.deadline <= self.ledger.chain.timestamp() + 60:
            raise JobRefused(
                f"escrow {lock.escrow} reaches its deadline within a minute: reclaim it and "
                "lock again",
                403,
            )
        return _umbral_key(lock.consumer_key)

    # ------------------------------------------------------------ consumer reads

    def authorize(self, signed: SignedRequest[Any], job: int, action: str) -> JobInfo:
        """The job, if `signed` is its consumer's fresh JobRequest for `action`."""
        try:
            verified = verify_request(
                signed,
                self.chain_id,
                int(self._clock()),
                self._nonces,
                expect=JobRequest,
                verifying_contract=self.verifying_contract,
            )
        except RequestRefused as exc:
            raise JobRefused(str(exc), 401) from None
        req: JobRequest = verified.request
        if req.job != job_bytes(job) or req.action != action:
            raise JobRefused(f"the signed request is not for {action} of job {job}", 403)
        info, _ = self._store.get(job)
        if info.consumer != req.consumer:
            raise JobRefused("only the job's consumer may read it", 403)
        return info

    def status(self, job: int) -> JobInfo:
        return self._store.get(job)[0]

    def sealed(self, job: int, kind: str) -> bytes:
        """The job's sealed result or logs (encrypted to its consumer)."""
        info = self.status(job)
        path = self.data_dir / "results" / f"{job}.{kind}"
        if not path.exists():
            raise JobNotFound(f"job {job} has no {kind} (it is {info.state})")
        return path.read_bytes()

    def describe(self, dataset: int) -> dict[str, Any]:
        """Whether and how this node computes on `dataset` (its version, compute service,
        DP policy), or :class:`JobRefused` (404) saying why not. Public: a consumer asks
        before ordering, so that nobody pays for a job the node would refuse."""
        ds = self._dataset(dataset)
        return {
            "dataset": dataset,
            "version": ds.version,
            "service_id": ds.service_id,
            "differential_privacy": ds.differential_privacy,
            "epsilon_budget": ds.epsilon_budget if ds.differential_privacy else 0.0,
            "consumer_budget": ds.consumer_budget if ds.differential_privacy else 0.0,
        }

    def budget(self, dataset: int, consumer: str) -> dict[str, Any]:
        try:
            ds = self._dataset(dataset)
        except JobRefused as exc:
            raise JobNotFound(str(exc)) from None
        total = ds.epsilon_budget if ds.differential_privacy else 0.0
        cap = ds.consumer_budget if ds.differential_privacy else 0.0
        out = self.budgets.budget(dataset, consumer, total, cap).to_json()
        out["differential_privacy"] = ds.differential_privacy
        return out

    # ------------------------------------------------------------ owner side

    def pending(self, controller: str | None = None) -> list[JobInfo]:
        """Jobs waiting for review (only on datasets `controller` controls, if given)."""
        jobs = [self.status(j) for j in self._store.by_state("pending")]
        if controller is None:
            return jobs
        with self._chain:
            mine = {
                d
                for d in {j.dataset for j in jobs}
                if self.ledger.data_nft.get_dataset(d).controller == controller
            }
        return [j for j in jobs if j.dataset in mine]

    def authorize_owner(
        self, signed: SignedRequest[Any], action: str, job: int = 0, reason: str = ""
    ) -> str:
        """The signer, if `signed` is a fresh OwnerJobRequest for `action` on `job` by the
        on-chain controller of the job's dataset (for ``list``: any account; it sees
        only its own datasets' jobs)."""
        try:
            verified = verify_request(
                signed,
                self.chain_id,
                int(self._clock()),
                self._nonces,
                expect=OwnerJobRequest,
                verifying_contract=self.verifying_contract,
            )
        except RequestRefused as exc:
            raise JobRefused(str(exc), 401) from None
        req: OwnerJobRequest = verified.request
        if req.action != action or req.job != job:
            raise JobRefused(f"the signed request is not for {action} of job {job}", 403)
        if req.reason != reason_hash(reason):
            raise JobRefused("the reason is not the one signed", 403)
        if action != "list":
            info = self.status(job)
            with self._chain:
                controller = self.ledger.data_nft.get_dataset(info.dataset).controller
            if controller != req.owner:
                raise JobRefused(
                    f"only the controller of dataset {info.dataset} may {action} its jobs", 403
                )
        return req.owner

    def review(self, job: int) -> Review:
        """The job and its code, for the owner to read; on a dataset that requires DP,
        whether the code is one of the node's DP algorithms (if not, it is not DP)."""
        info = self.status(job)
        pin = self._store.pin(job)
        configured = self.datasets.get(info.dataset)
        required = (
            pin.differential_privacy
            if pin is not None
            else bool(configured is not None and configured.differential_privacy)
        )
        return Review(
            info,
            self._store.code(job).decode("utf-8", "replace"),
            self._store.params(job),
            dp_review_note(bytes.fromhex(info.algorithm)) if required else None,
        )

    def start(self, job: int) -> JobInfo:
        """Queue a held job (its consumer's ``start``): every site of a federated round
        has reserved its epsilon, so now each may run."""
        with self._admit:
            info = self.status(job)
            if info.state != "held":
                raise JobRefused(f"job {job} is {info.state}, not held", 409)
            self._store.set(job, state="queued", reason="")
        self._queue.put(job)
        log.info("job %d started by its consumer", job)
        return self.status(job)

    def _release_holds(self) -> None:
        """Cancel the held jobs whose consumer did not start them in time (their epsilon
        reservation is released, their escrow refunded)."""
        while not self._closing.wait(self._hold_poll):
            for job in self._store.expired_holds(self._clock()):
                try:
                    self.cancel(job, "the node: its consumer did not start it in time")
                except (ComputeError, ChainError, ContractRuleError) as exc:
                    log.error("job %d: could not end its hold (%s)", job, type(exc).__name__)

    def cancel(self, job: int, by: str = "the owner") -> JobInfo:
        """Cancel a job that waits for review, its start or in the queue: on chain (the
        escrow, if any, goes back to the consumer), then here; its epsilon reservation is
        released. A running job cannot be cancelled."""
        with self._admit:
            info = self.status(job)
            if info.state not in ("pending", "held", "queued"):
                raise JobRefused(
                    f"job {job} is {info.state}: only a pending, held or queued job can be "
                    "cancelled",
                    409,
                )
            with self._chain:
                self.ledger.compute.cancel(self.operator.account, job)
            self._store.set(
                job, state="cancelled", reason=f"cancelled by {by}", finished=self._clock()
            )
        self.budgets.release(job)
        log.info("job %d cancelled by %s", job, by)
        return self.status(job)

    def approve(self, job: int) -> JobInfo:
        return self._decide(job, True, "")

    def deny(self, job: int, reason: str = "") -> JobInfo:
        return self._decide(job, False, reason)

    def _decide(self, job: int, approved: bool, reason: str) -> JobInfo:
        info = self.status(job)
        if info.state != "pending":
            raise JobRefused(f"job {job} is {info.state}, not pending review", 409)
        with self._chain:
            self.ledger.compute.decide(self.operator.account, job, approved, reason[:256])
        if approved:
            self._store.set(job, state="queued", reason="")
            self._queue.put(job)
        else:
            self.budgets.release(job)
            self._store.set(
                job,
                state="denied",
                reason=f"denied by the owner: {reason}"[:300],
                finished=self._clock(),
            )
        log.info("job %d %s by the owner", job, "approved" if approved else "denied")
        return self.status(job)

    # ------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._execute(job)
            except Exception as exc:  # the node keeps serving: fail this job only
                log.error("job %d: internal error (%s)", job, type(exc).__name__)
                try:
                    self._finish(job, False, _ZERO, "internal error on the compute node", 0.0)
                except Exception as inner:
                    log.error("job %d: could not record failure (%s)", job, type(inner).__name__)

    def _index(self, path: Path) -> RowIndex:
        mtime = path.stat().st_mtime
        cached = self._indexes.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, RowIndex.from_paths([path]))
            self._indexes[path] = cached
        return cached[1]

    def _execute(self, job: int) -> None:
        with self._admit:  # a cancel and the start of the run never cross
            info, _ = self._store.get(job)
            if info.state != "queued":
                return
            with self._chain:
                # The consumer may have reclaimed a timed-out escrow (the job is cancelled).
                on_chain = self.ledger.compute.job(job).status
            if on_chain != JobStatus.APPROVED:
                self.budgets.release(job)
                self._store.set(
                    job,
                    state="cancelled",
                    reason="cancelled on chain before it ran (escrow reclaimed after its deadline)",
                    finished=self._clock(),
                )
                return
            self._store.set(job, state="running")
        pin = self._store.pin(job)
        if pin is None:
            path = self.datasets[info.dataset].path
            self._run(job, path, self._index(path), self.datasets[info.dataset])
            return
        assert self.stored is not None  # a pinned job was admitted through `stored`
        # The plaintext exists only in this private directory, for this job's run.
        with private_dir(self.data_dir / "inputs", f"job-{job}-") as folder:
            try:
                path = self.stored.fetch(pin, folder)
            except DatagoraError as exc:
                log.error("job %d: dataset %d not readable (%s)", job, info.dataset, exc)
                reason = "the dataset could not be fetched and decrypted from the storage nodes"
                if pin.differential_privacy:
                    self.budgets.release(job)
                self._finish(job, False, _ZERO, reason, 0.0)
                return
            index = self._stored_indexes.get(pin.manifest_hash)
            if index is None:
                index = RowIndex.from_paths([path])
                self._stored_indexes[pin.manifest_hash] = index
            self._run(job, path, index, pin)

    def _run(
        self, job: int, path: Path, index: RowIndex, dataset: ComputeDataset | StoredDataset
    ) -> None:
        info, consumer_key = self._store.get(job)
        params = self._store.params(job)
        dp = None
        if dataset.differential_privacy:
            epsilon, bounds = check_dp_params(params)
            dp = {"epsilon": epsilon, "bounds": bounds}
        with self.sandbox.run(self._store.code(job), {info.dataset: path}, params, dp=dp) as run:
            if dataset.differential_privacy:
                self.budgets.spend(job)
            logs, withheld = check_logs(run.stdout + run.stderr, index, self.policy)
            if withheld:
                logs = f"[{withheld}]\n".encode()
            ok, reason = run.ok, run.reason
            archive = b""
            if ok:
                verdict = check_output(run.output_dir, index, self.policy)
                ok, reason = verdict.ok, verdict.reason
                if ok:
                    archive = archive_output(run.output_dir)
        results = self.data_dir / "results"
        (results / f"{job}.logs").write_bytes(seal_result(consumer_key, logs, job, "logs"))
        result_hash = _ZERO
        if ok:
            sealed = seal_result(consumer_key, archive, job, "result")
            result_hash = hashlib.sha256(sealed).digest()
            (results / f"{job}.result").write_bytes(sealed)
        self._finish(job, ok, result_hash, reason, info.epsilon)

    def _finish(self, job: int, ok: bool, result_hash: bytes, reason: str, epsilon: float) -> None:
        with self._chain:
            try:
                self.ledger.compute.complete(
                    self.operator.account,
                    job,
                    ok,
                    result_hash,
                    math.ceil(round(epsilon * 1000, 6)),  # milli-epsilon, never rounded down
                    ("ok" if ok else reason)[:256],
                )
            except ContractRuleError:
                if self.ledger.compute.job(job).status != JobStatus.CANCELLED:
                    raise
                # Its escrow was reclaimed after the deadline while it ran: nothing to claim.
                self._store.set(
                    job,
                    state="cancelled",
                    reason="its escrow was reclaimed after the deadline while it ran",
                    finished=self._clock(),
                )
                log.info("job %d finished after its escrow was reclaimed", job)
                return
        self._store.set(
            job,
            state="succeeded" if ok else "failed",
            reason=reason,
            result_hash=result_hash.hex() if ok else "",
            finished=self._clock(),
        )
        log.info("job %d %s%s", job, "succeeded" if ok else "failed: ", "" if ok else reason)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until no job is queued or running (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._store.by_state("queued") or self._store.by_state("running"):
            if time.monotonic() > deadline:
                raise ComputeError("jobs still running")
            time.sleep(0.02)

    def close(self) -> None:
        """Stop the workers (after their current job) and close the stores."""
        self._closing.set()
        self._holds.join(timeout=30)
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=30)
        self._store.close()
        self._nonces.close()
        self.budgets.close()
