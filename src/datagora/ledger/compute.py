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
    ) -> tuple[int, Tx]:
        """Record a consumer's job; return its id (approved at once for a trusted algorithm)."""
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
