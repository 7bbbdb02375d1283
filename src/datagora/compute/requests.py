"""The signed requests of the compute layer (``datagora.signed-request.v1`` types).

A consumer submits a job with a :class:`ComputeRequest` and asks about it with a
:class:`JobRequest`; a dataset's controller acts on jobs at its compute node with an
:class:`OwnerJobRequest`. All are EIP-712 structs signed and verified by
:mod:`datagora.crypto.eip712`; their schema is in ``docs/sharing.md`` and
``docs/compute.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from datagora.crypto.eip712 import Request, register_request
from datagora.crypto.errors import MalformedRequest

__all__ = [
    "JOB_ACTIONS",
    "MAX_HOLD_S",
    "OWNER_ACTIONS",
    "ComputeRequest",
    "JobRequest",
    "OwnerJobRequest",
]

MAX_HOLD_S: Final = 600
"""Longest a held job waits for its consumer's ``start`` (10 minutes)."""


@register_request
@dataclass(frozen=True, slots=True)
class ComputeRequest(Request):
    """A consumer submits a compute job to an owner's compute node.

    ``order`` is the hash of the transaction that started the consumer's order;
    ``algorithm`` the SHA-256 of the algorithm file; ``params`` the SHA-256 of the
    job's parameters as canonical JSON (sorted keys, no spaces, UTF-8). ``hold``
    (seconds, at most :data:`MAX_HOLD_S`; 0: run when approved) asks the node to admit
    the job, reserve its epsilon and wait for the consumer's ``start``
    (:class:`JobRequest`) before running it; a job not started within ``hold``
    seconds is cancelled and its reservation released. A federated round reserves
    every site this way before any site runs.
    """

    PRIMARY_TYPE: ClassVar[str] = "ComputeRequest"
    SIGNER: ClassVar[str] = "consumer"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("consumer", "consumer", "address"),
        ("dataset", "dataset", "uint256"),
        ("order", "order", "bytes32"),
        ("algorithm", "algorithm", "bytes32"),
        ("params", "params", "bytes32"),
        ("hold", "hold", "uint32"),
        ("nonce", "nonce", "bytes32"),
        ("expires", "expires", "uint64"),
    )

    consumer: str
    dataset: int
    order: bytes
    algorithm: bytes
    params: bytes
    nonce: bytes
    expires: int
    hold: int = 0

    def __post_init__(self) -> None:
        Request.__post_init__(self)
        if self.hold > MAX_HOLD_S:
            raise MalformedRequest(f"hold is at most {MAX_HOLD_S} seconds")


JOB_ACTIONS: Final = ("status", "logs", "result", "cancel", "start")


@register_request
@dataclass(frozen=True, slots=True)
class JobRequest(Request):
    """A consumer asks a compute node about one of its jobs (``status``, ``logs``,
    ``result``), withdraws it (``cancel``) or starts a held one (``start``)."""

    PRIMARY_TYPE: ClassVar[str] = "JobRequest"
    SIGNER: ClassVar[str] = "consumer"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("consumer", "consumer", "address"),
        ("job", "job", "bytes32"),
        ("action", "action", "string"),
        ("nonce", "nonce", "bytes32"),
        ("expires", "expires", "uint64"),
    )

    consumer: str
    job: bytes
    action: str
    nonce: bytes
    expires: int

    def __post_init__(self) -> None:
        Request.__post_init__(self)
        if self.action not in JOB_ACTIONS:
            raise MalformedRequest(f"action must be one of {', '.join(JOB_ACTIONS)}")


OWNER_ACTIONS: Final = ("list", "review", "approve", "deny", "cancel")


@register_request
@dataclass(frozen=True, slots=True)
class OwnerJobRequest(Request):
    """A dataset's controller acts on a job at its compute node (``datagora jobs …``).

    ``job`` is the job id (0 for ``list``); ``reason`` is the SHA-256 of a denial's
    reason text (zero bytes otherwise), so the reason recorded on chain is the one
    the owner signed. The node accepts it only from the dataset's on-chain controller.
    """

    PRIMARY_TYPE: ClassVar[str] = "OwnerJobRequest"
    SIGNER: ClassVar[str] = "owner"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("owner", "owner", "address"),
        ("job", "job", "uint256"),
        ("action", "action", "string"),
        ("reason", "reason", "bytes32"),
        ("nonce", "nonce", "bytes32"),
        ("expires", "expires", "uint64"),
    )

    owner: str
    job: int
    action: str
    reason: bytes
    nonce: bytes
    expires: int

    def __post_init__(self) -> None:
        Request.__post_init__(self)
        if self.action not in OWNER_ACTIONS:
            raise MalformedRequest(f"action must be one of {', '.join(OWNER_ACTIONS)}")
