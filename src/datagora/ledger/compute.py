"""Typed wrapper of the ComputeRegistry: algorithms, trusted lists, jobs and results."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ContractWrapper, Tx, check_address, check_bytes32
from datagora.ledger.errors import InvalidArgument

MAX_TEXT = 256


class JobStatus(enum.IntEnum):
    PENDING = 1
    APPROVED = 2
    DENIED = 3
    SUCCEEDED = 4
    FAILED = 5
    CANCELLED = 6


class EscrowState(enum.IntEnum):
    LOCKED = 1
    PAID = 2
    REFUNDED = 3


class RefundReason(enum.IntEnum):
    FAILED = 1
    DENIED = 2
    CANCELLED = 3
    TIMED_OUT = 4
    UNUSED = 5


@dataclass(frozen=True)
class EscrowRecord:
    """One job's payment held by the ComputeRegistry (amounts in the market currency)."""

    escrow: int
    consumer: str
    dataset: int
    amount: int
    deadline: int
    job: int
    """The job it paid for (0: not used by a job yet)."""
    state: EscrowState


@dataclass(frozen=True)
class Lock:
    """A locked escrow: its id, the transaction (give its hash to the compute node)."""

    escrow: int
    amount: int
    deadline: int
    tx: Tx


@dataclass(frozen=True)
class EscrowLocked:
    """What a lock transaction says (the compute node reads it like an order)."""

    escrow: int
    dataset: int
    consumer: str
    amount: int
    deadline: int
    algorithm: bytes
    params: bytes
    consumer_key: bytes


@dataclass(frozen=True)
class JobRecord:
    job: int
    dataset: int
    version: int
    service_id: int
    consumer: str
    algorithm: bytes
    params: bytes
    status: JobStatus
    result: bytes


def _text(value: str, what: str) -> str:
    if len(value.encode()) > MAX_TEXT:
        raise InvalidArgument(f"{what} too long", f"{what} is limited to {MAX_TEXT} bytes")
    return value


class ComputeRegistry(ContractWrapper):
    contract_name = "ComputeRegistry"

    def publish_algorithm(self, account: LocalAccount, algorithm: bytes, uri: str = "") -> Tx:
        check_bytes32(algorithm, "algorithm hash")
        if len(uri.encode()) > 432:
            raise InvalidArgument("uri too long", "an algorithm URI is limited to 432 bytes")
        return Tx.of(self._transact(account, "publish_algorithm", algorithm, uri))

    def algorithm_publisher(self, algorithm: bytes) -> str:
        return str(self._view("algorithm_publisher", check_bytes32(algorithm, "algorithm hash")))

    def set_trusted(
        self, account: LocalAccount, dataset: int, algorithm: bytes, trusted: bool
    ) -> Tx:
        check_bytes32(algorithm, "algorithm hash")
        return Tx.of(self._transact(account, "set_trusted", dataset, algorithm, trusted))

    def is_trusted(self, dataset: int, algorithm: bytes) -> bool:
        return bool(self._view("trusted", dataset, check_bytes32(algorithm, "algorithm hash")))

    def set_operator(self, account: LocalAccount, dataset: int, operator: str, allowed: bool) -> Tx:
        return Tx.of(
            self._transact(
                account, "set_operator", dataset, check_address(operator, "operator"), allowed
            )
        )

    def is_operator(self, dataset: int, account: str) -> bool:
        return bool(self._view("operator", dataset, account))

    def record_job(
        self,
        account: LocalAccount,
        dataset: int,
        version: int,
        service_id: int,
        consumer: str,
        algorithm: bytes,
        params: bytes,
        escrow: int = 0,
    ) -> tuple[int, Tx]:
        """Record a consumer's job; return its id (approved at once for a trusted algorithm).

        ``escrow`` 0: paid by the consumer's valid order of ``service_id``; otherwise the
        consumer's locked escrow for this dataset, algorithm and parameters."""
        check_bytes32(algorithm, "algorithm hash")
        check_bytes32(params, "params hash")
        receipt = self._transact(
            account,
            "record_job",
            dataset,
            version,
            service_id,
            check_address(consumer, "consumer"),
            algorithm,
            params,
            escrow,
        )
        (ev,) = self._decode(receipt, "JobRecorded")
        return int(ev["job"]), Tx.of(receipt)

    def decide(self, account: LocalAccount, job: int, approved: bool, reason: str = "") -> Tx:
        return Tx.of(self._transact(account, "decide", job, approved, _text(reason, "reason")))

    def complete(
        self,
        account: LocalAccount,
        job: int,
        succeeded: bool,
        result: bytes,
        epsilon_milli: int = 0,
        note: str = "",
    ) -> Tx:
        check_bytes32(result, "result hash")
        return Tx.of(
            self._transact(
                account, "complete", job, succeeded, result, epsilon_milli, _text(note, "note")
            )
        )

    def job(self, job: int) -> JobRecord:
        d, v, s, consumer, algorithm, params, status, result = self._view("jobs", job)
        if int(d) == 0:
            from datagora.ledger.errors import NotFound

            raise NotFound("no such job", f"there is no job {job}")
        return JobRecord(
            job,
            int(d),
            int(v),
            int(s),
            str(consumer),
            bytes(algorithm),
            bytes(params),
            JobStatus(status),
            bytes(result),
        )

    def job_count(self) -> int:
        return int(self._view("job_count"))

    # ------------------------------------------------------------ pay per job (escrow)

    def set_job_terms(self, account: LocalAccount, dataset: int, price: int, timeout: int) -> Tx:
        """Sell jobs one by one at ``price`` (market currency base units; 0: orders only);
        an escrow waits ``timeout`` seconds (at most 30 days) for its job to be settled."""
        if not 0 <= price < 2**128 or not 0 <= timeout <= 30 * 86400:
            raise InvalidArgument("bad amount", "price < 2**128, timeout at most 30 days")
        return Tx.of(self._transact(account, "set_job_terms", dataset, price, timeout))

    def job_terms(self, dataset: int) -> tuple[int, int]:
        """(price per job, escrow timeout in seconds); price 0: no per-job sale."""
        price, timeout = self._view("job_terms", dataset)
        return int(price), int(timeout)

    def lock(
        self,
        account: LocalAccount,
        dataset: int,
        algorithm: bytes,
        params: bytes,
        consumer_key: bytes = b"",
        max_price: int | None = None,
    ) -> Lock:
        """Pay one job in advance (approve the registry for the price first).

        ``max_price`` defaults to the price read now: a price raised before the lock
        is mined reverts it and nothing moves."""
        check_bytes32(algorithm, "algorithm hash")
        check_bytes32(params, "params hash")
        if len(consumer_key) > 128:
            raise InvalidArgument("consumer key too long", "a consumer key is at most 128 bytes")
        if max_price is None:
            max_price = self.job_terms(dataset)[0]
        receipt = self._transact(
            account, "lock", dataset, algorithm, params, max_price, bytes(consumer_key)
        )
        (ev,) = self._decode(receipt, "EscrowLocked")
        return Lock(int(ev["escrow"]), int(ev["amount"]), int(ev["deadline"]), Tx.of(receipt))

    def lock_from_receipt(self, receipt: object) -> EscrowLocked:
        """The escrow a lock transaction made, or ValueError if it made none."""
        events = self._decode(receipt, "EscrowLocked")  # type: ignore[arg-type]
        if len(events) != 1:
            raise ValueError("the transaction locked no escrow")
        ev = events[0]
        return EscrowLocked(
            int(ev["escrow"]),
            int(ev["dataset"]),
            str(ev["consumer"]),
            int(ev["amount"]),
            int(ev["deadline"]),
            bytes(ev["algorithm"]),
            bytes(ev["params"]),
            bytes(ev["consumer_key"]),
        )

    def escrow(self, escrow: int) -> EscrowRecord:
        consumer, dataset, amount, deadline, job, state = self._view("escrow", escrow)
        if int(state) == 0:
            from datagora.ledger.errors import NotFound

            raise NotFound("no such escrow", f"there is no escrow {escrow}")
        return EscrowRecord(
            escrow,
            str(consumer),
            int(dataset),
            int(amount),
            int(deadline),
            int(job),
            EscrowState(int(state)),
        )

    def job_escrow(self, job: int) -> int:
        """The escrow that pays for `job` (0: paid by an order)."""
        return int(self._view("job_escrow", job))

    def escrow_count(self) -> int:
        return int(self._view("escrow_count"))

    def cancel(self, account: LocalAccount, job: int) -> Tx:
        """Cancel an unsettled job and refund its escrow: its consumer while it waits for
        review, the controller or an operator until it is settled."""
        return Tx.of(self._transact(account, "cancel", job))

    def reclaim(self, account: LocalAccount, escrow: int) -> Tx:
        """Refund an escrow: its consumer's, while no job used it; anyone's past its deadline."""
        return Tx.of(self._transact(account, "reclaim", escrow))

    def settlement(self, receipt: object) -> dict[str, object] | None:
        """The EscrowPaid or EscrowRefunded event in `receipt` (None if it settled none)."""
        for name in ("EscrowPaid", "EscrowRefunded"):
            events = self._decode(receipt, name)  # type: ignore[arg-type]
            if events:
                return {"event": name, **events[0]}
        return None
