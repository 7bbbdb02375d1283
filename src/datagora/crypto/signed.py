"""EIP-712 signed requests to datagora services (format ``datagora.signed-request.v1``).

Every request a consumer or owner sends to an agent, a proxy or a compute node is a
typed-data message (EIP-712) signed by the account it names, under the domain
``{name: "datagora", version: "1", chainId[, verifyingContract]}``. It carries a
random 32-byte nonce and an expiry (Unix seconds). :func:`verify_request` is the one
place such a request becomes a :class:`VerifiedRequest`: it checks the chain, the
signature against the named account, the expiry window and, through a
:class:`NonceStore`, that the request was not seen before.

A service keeps its own nonce store, so one signed request may be presented once to
each of several services (a consumer asks m proxies with one signature), never twice
to the same one. The types and their JSON form are specified in ``docs/sharing.md``
("Signed requests").
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar, overload

from coincurve import PublicKey
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils.address import is_hex_address
from eth_utils.address import to_checksum_address as _to_checksum_address
from sha3 import keccak_256

from datagora.crypto.keys import Identity
from datagora.errors import DatagoraError

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "MAX_LIFETIME_S",
    "NONCE_SIZE",
    "OWNER_ACTIONS",
    "REQUEST_TYPES",
    "SIGNED_FORMAT",
    "ComputeRequest",
    "DelegationRequest",
    "ExpiryTooFar",
    "FragmentRequest",
    "JobRequest",
    "MalformedRequest",
    "MemoryNonceStore",
    "NonceStore",
    "OwnerJobRequest",
    "ReplayedRequest",
    "Request",
    "RequestRefused",
    "SignatureExpired",
    "SignatureInvalid",
    "SignedRequest",
    "SqliteNonceStore",
    "UnexpectedRequestType",
    "VerifiedRequest",
    "WrongChain",
    "WrongSigner",
    "new_nonce",
    "sign_request",
    "typed_data",
    "verify_request",
]

SIGNED_FORMAT: Final = "datagora.signed-request.v1"
DOMAIN_NAME: Final = "datagora"
DOMAIN_VERSION: Final = "1"
MAX_LIFETIME_S: Final = 600
"""Longest accepted time between now and a request's expiry (10 minutes)."""
NONCE_SIZE: Final = 32
_SIGNATURE_SIZE: Final = 65
_MAX_BYTES: Final = 1024
_MAX_STRING: Final = 256


class RequestRefused(DatagoraError):
    """A signed request was refused; the subclass says why."""


class MalformedRequest(RequestRefused):
    """The request is not valid ``datagora.signed-request.v1`` or a field is out of range."""


class UnexpectedRequestType(RequestRefused):
    """The request is of another type than this service accepts."""


class SignatureInvalid(RequestRefused):
    """The signature is malformed or no signer can be recovered from it."""


class WrongSigner(SignatureInvalid):
    """The signature is not by the account the request names (another account, or altered)."""


class WrongChain(SignatureInvalid):
    """The request was signed for another chain id or verifying contract."""


class SignatureExpired(RequestRefused):
    """The request's expiry has passed."""


class ExpiryTooFar(RequestRefused):
    """The request expires further in the future than services accept."""


class ReplayedRequest(RequestRefused):
    """This account already used this nonce: the request is a replay."""


def new_nonce() -> bytes:
    """A fresh random 32-byte nonce."""
    return os.urandom(NONCE_SIZE)


# ---------------------------------------------------------------- request types

_UINT_RE: Final = re.compile(r"uint(8|16|32|64|128|256)")


@lru_cache(maxsize=4096)
def to_checksum_address(value: str | bytes) -> str:
    """EIP-55 form of an address, remembered: a proxy checksums the same few
    accounts on every request, and each costs several keccak and regex calls."""
    return str(_to_checksum_address(value))


def _check_value(name: str, sol_type: str, value: Any) -> Any:
    """Validate one field against its Solidity type; returns the normalised value."""
    if sol_type == "address":
        if not isinstance(value, str) or not is_hex_address(value):
            raise MalformedRequest(f"{name} must be a 20-byte hex address")
        return to_checksum_address(value)
    if match := _UINT_RE.fullmatch(sol_type):
        bits = int(match.group(1))
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
            raise MalformedRequest(f"{name} must be an integer in [0, 2**{bits})")
        return value
    if sol_type == "bytes32":
        if not isinstance(value, bytes | bytearray) or len(value) != 32:
            raise MalformedRequest(f"{name} must be 32 bytes")
        return bytes(value)
    if sol_type == "bytes":
        if not isinstance(value, bytes | bytearray) or len(value) > _MAX_BYTES:
            raise MalformedRequest(f"{name} must be at most {_MAX_BYTES} bytes")
        return bytes(value)
    if sol_type == "string":
        if not isinstance(value, str) or len(value.encode()) > _MAX_STRING:
            raise MalformedRequest(f"{name} must be text of at most {_MAX_STRING} bytes")
        return value
    raise AssertionError(f"unsupported EIP-712 type {sol_type}")


def _to_json_value(sol_type: str, value: Any) -> Any:
    if sol_type == "uint256":
        return str(value)  # beyond 2**53: JSON numbers would lose precision in many parsers
    if sol_type in ("bytes32", "bytes"):
        return "0x" + bytes(value).hex()
    return value


def _from_json_value(name: str, sol_type: str, value: Any) -> Any:
    try:
        if sol_type == "uint256":
            if not isinstance(value, str) or not value.isdigit() or value != str(int(value)):
                raise ValueError
            return int(value)
        if sol_type in ("bytes32", "bytes"):
            if not isinstance(value, str) or not value.startswith("0x") or value != value.lower():
                raise ValueError
            return bytes.fromhex(value[2:])
    except ValueError:
        raise MalformedRequest(f"{name} is not in the JSON form of {sol_type}") from None
    return value


@dataclass(frozen=True, slots=True)
class Request:
    """Base of the signed request types; each subclass declares its EIP-712 struct.

    ``FIELDS`` lists ``(python name, EIP-712 name, EIP-712 type)`` in struct order;
    ``SIGNER`` is the field naming the account that must sign it. Every type ends
    with ``nonce`` (bytes32) and ``expires`` (uint64, Unix seconds).
    """

    PRIMARY_TYPE: ClassVar[str] = ""
    SIGNER: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __post_init__(self) -> None:
        for name, _, sol_type in self.FIELDS:
            object.__setattr__(self, name, _check_value(name, sol_type, getattr(self, name)))

    @property
    def signer_address(self) -> str:
        """The account that must have signed this request."""
        return str(getattr(self, self.SIGNER))

    @property
    def request_nonce(self) -> bytes:
        """The request's nonce."""
        return bytes(getattr(self, "nonce"))  # noqa: B009 - every subclass has one

    @property
    def request_expires(self) -> int:
        """The request's expiry, Unix seconds."""
        return int(getattr(self, "expires"))  # noqa: B009 - every subclass has one

    @classmethod
    def eip712_type(cls) -> list[dict[str, str]]:
        """The struct's member list, as EIP-712 ``types`` wants it."""
        return [{"name": eip, "type": sol} for _, eip, sol in cls.FIELDS]

    def eip712_message(self) -> dict[str, Any]:
        """The message for EIP-712 encoding (Python values)."""
        return {eip: getattr(self, name) for name, eip, _ in self.FIELDS}

    def to_json_message(self) -> dict[str, Any]:
        """The message in its JSON form (see ``docs/sharing.md``)."""
        return {eip: _to_json_value(sol, getattr(self, name)) for name, eip, sol in self.FIELDS}


@dataclass(frozen=True, slots=True)
class FragmentRequest(Request):
    """A consumer asks a proxy to re-encrypt one dataset version's capsule for it.

    ``capsule`` is the SHA-256 of the capsule bytes (``WrappedKey.capsule_digest``).
    """

    PRIMARY_TYPE: ClassVar[str] = "FragmentRequest"
    SIGNER: ClassVar[str] = "consumer"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("consumer", "consumer", "address"),
        ("dataset", "dataset", "uint256"),
        ("version", "version", "uint32"),
        ("capsule", "capsule", "bytes32"),
        ("nonce", "nonce", "bytes32"),
        ("expires", "expires", "uint64"),
    )

    consumer: str
    dataset: int
    version: int
    capsule: bytes
    nonce: bytes
    expires: int


@dataclass(frozen=True, slots=True)
class DelegationRequest(Request):
    """An owner asks its agent to make key fragments for a consumer and send them to proxies.

    ``grant`` is the AccessRegistry request id of the grant, or 0 when the consumer's
    basis is an order (automatic policy); ``consumer_key`` is the consumer's Umbral
    public key (33 bytes), which the agent also checks against the chain. ``batch``
    names the set of fragments this one belongs to: fragments of one
    ``generate_kfrags`` call combine, fragments of two different calls do not, so a
    proxy keeps them apart and a consumer combines only fragments of one batch.
    """

    PRIMARY_TYPE: ClassVar[str] = "DelegationRequest"
    SIGNER: ClassVar[str] = "owner"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("owner", "owner", "address"),
        ("consumer", "consumer", "address"),
        ("consumer_key", "consumerKey", "bytes"),
        ("dataset", "dataset", "uint256"),
        ("version", "version", "uint32"),
        ("grant", "grant", "uint256"),
        ("threshold", "threshold", "uint8"),
        ("shares", "shares", "uint8"),
        ("batch", "batch", "bytes32"),
        ("nonce", "nonce", "bytes32"),
        ("expires", "expires", "uint64"),
    )

    owner: str
    consumer: str
    consumer_key: bytes
    dataset: int
    version: int
    grant: int
    threshold: int
    shares: int
    batch: bytes
    nonce: bytes
    expires: int

    def __post_init__(self) -> None:
        Request.__post_init__(self)
        if len(self.consumer_key) != 33:
            raise MalformedRequest("consumer_key must be a 33-byte compressed Umbral key")
        if not 1 <= self.threshold <= self.shares:
            raise MalformedRequest("need 1 ≤ threshold ≤ shares")


@dataclass(frozen=True, slots=True)
class ComputeRequest(Request):
    """A consumer submits a compute job to an owner's compute node.

    ``order`` is the hash of the transaction that started the consumer's order;
    ``algorithm`` the SHA-256 of the algorithm file; ``params`` the SHA-256 of the
    job's parameters as canonical JSON (sorted keys, no spaces, UTF-8).
    """

    PRIMARY_TYPE: ClassVar[str] = "ComputeRequest"
    SIGNER: ClassVar[str] = "consumer"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("consumer", "consumer", "address"),
        ("dataset", "dataset", "uint256"),
        ("order", "order", "bytes32"),
        ("algorithm", "algorithm", "bytes32"),
        ("params", "params", "bytes32"),
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


JOB_ACTIONS: Final = ("status", "logs", "result")


@dataclass(frozen=True, slots=True)
class JobRequest(Request):
    """A consumer asks a compute node about one of its jobs: ``status``, ``logs`` or ``result``."""

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


OWNER_ACTIONS: Final = ("list", "review", "approve", "deny")


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


REQUEST_TYPES: Final[dict[str, type[Request]]] = {
    cls.PRIMARY_TYPE: cls
    for cls in (FragmentRequest, DelegationRequest, ComputeRequest, JobRequest, OwnerJobRequest)
}

R = TypeVar("R", bound=Request)


# ---------------------------------------------------------------- signing


def _domain(chain_id: int, verifying_contract: str | None) -> dict[str, Any]:
    domain: dict[str, Any] = {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id}
    if verifying_contract is not None:
        domain["verifyingContract"] = verifying_contract
    return domain


def typed_data(
    request: Request, chain_id: int, verifying_contract: str | None = None
) -> dict[str, Any]:
    """The full EIP-712 typed data of ``request`` (``types``, ``primaryType``, ``domain``,
    ``message``), as eth-account's ``encode_typed_data(full_message=...)`` takes it.
    """
    domain_type = [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
    ]
    if verifying_contract is not None:
        domain_type.append({"name": "verifyingContract", "type": "address"})
    return {
        "types": {"EIP712Domain": domain_type, request.PRIMARY_TYPE: request.eip712_type()},
        "primaryType": request.PRIMARY_TYPE,
        "domain": _domain(chain_id, verifying_contract),
        "message": request.eip712_message(),
    }


def _signable(request: Request, chain_id: int, verifying_contract: str | None) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(request, chain_id, verifying_contract))


# The EIP-712 digest of our own fixed struct types, computed directly: every service
# verifies a signature per request, and the generic encoder costs several times the
# signature recovery. Equal to eth-account's encoding (tests check every type).
_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's hash), by safe-pysha3: several times eth_utils' speed."""
    return bytes(keccak_256(data).digest())


def _encode_type(name: str, members: list[tuple[str, str]]) -> bytes:
    return f"{name}({','.join(f'{t} {n}' for n, t in members)})".encode()


@lru_cache(maxsize=64)
def _domain_separator(chain_id: int, verifying_contract: str | None) -> bytes:
    members = [("name", "string"), ("version", "string"), ("chainId", "uint256")]
    values: list[Any] = [DOMAIN_NAME, DOMAIN_VERSION, chain_id]
    if verifying_contract is not None:
        members.append(("verifyingContract", "address"))
        values.append(verifying_contract)
    encoded = b"".join(_encode_value(t, v) for (_, t), v in zip(members, values, strict=True))
    return keccak(keccak(_encode_type("EIP712Domain", members)) + encoded)


@lru_cache(maxsize=16)
def _type_hash(name: str, fields: tuple[tuple[str, str, str], ...]) -> bytes:
    return keccak(_encode_type(name, [(eip, sol) for _, eip, sol in fields]))


def _encode_value(sol_type: str, value: Any) -> bytes:
    if sol_type == "address":
        return bytes(12) + bytes.fromhex(value[2:])
    if sol_type.startswith("uint"):
        return int(value).to_bytes(32, "big")
    if sol_type == "bytes32":
        return bytes(value)
    if sol_type == "bytes":
        return keccak(bytes(value))
    if sol_type == "string":
        return keccak(str(value).encode())
    raise AssertionError(f"unsupported EIP-712 type {sol_type}")


def eip712_digest(request: Request, chain_id: int, verifying_contract: str | None = None) -> bytes:
    """The 32-byte EIP-712 digest a signature of ``request`` signs."""
    fields = b"".join(_encode_value(sol, getattr(request, n)) for n, _, sol in request.FIELDS)
    struct = keccak(_type_hash(request.PRIMARY_TYPE, request.FIELDS) + fields)
    return keccak(b"\x19\x01" + _domain_separator(chain_id, verifying_contract) + struct)


def _recover(digest: bytes, signature: bytes) -> str:
    """The address that made the 65-byte ``r ‖ s ‖ v`` signature of ``digest``."""
    v = signature[64]
    recovery = v - 27 if v in (27, 28) else v
    s_value = int.from_bytes(signature[32:64], "big")
    if recovery not in (0, 1) or not 0 < s_value < _SECP256K1_N:
        raise ValueError("bad v or s")
    public = PublicKey.from_signature_and_message(
        signature[:64] + bytes([recovery]), digest, hasher=None
    ).format(compressed=False)
    return to_checksum_address(keccak(public[1:])[-20:])


def _check_domain(chain_id: int, verifying_contract: str | None) -> str | None:
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 < chain_id < 2**256:
        raise MalformedRequest("chain id must be a positive integer")
    if verifying_contract is None:
        return None
    return str(_check_value("verifyingContract", "address", verifying_contract))


@dataclass(frozen=True, slots=True)
class SignedRequest(Generic[R]):
    """A request with its domain and 65-byte signature (r ‖ s ‖ v), ready to send as JSON."""

    request: R
    chain_id: int
    verifying_contract: str | None
    signature: bytes

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "verifying_contract", _check_domain(self.chain_id, self.verifying_contract)
        )
        if not isinstance(self.signature, bytes) or len(self.signature) != _SIGNATURE_SIZE:
            raise MalformedRequest(f"a signature is {_SIGNATURE_SIZE} bytes")

    def digest(self) -> bytes:
        """The 32-byte EIP-712 hash that was signed (for access logs)."""
        signable = _signable(self.request, self.chain_id, self.verifying_contract)
        return keccak(b"\x19" + signable.version + signable.header + signable.body)

    def to_json(self) -> dict[str, Any]:
        """The ``datagora.signed-request.v1`` JSON object."""
        return {
            "format": SIGNED_FORMAT,
            "type": self.request.PRIMARY_TYPE,
            "domain": _domain(self.chain_id, self.verifying_contract),
            "message": self.request.to_json_message(),
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignedRequest[Any]:
        """Parse a ``datagora.signed-request.v1`` object; raises :class:`MalformedRequest`.

        Parsing checks shapes and ranges only; :func:`verify_request` checks the rest.
        """
        if not isinstance(data, Mapping) or data.get("format") != SIGNED_FORMAT:
            raise MalformedRequest(f"not a {SIGNED_FORMAT} object")
        if set(data) != {"format", "type", "domain", "message", "signature"}:
            raise MalformedRequest(
                "a signed request has exactly: format type domain message signature"
            )
        request_type = REQUEST_TYPES.get(data["type"]) if isinstance(data["type"], str) else None
        if request_type is None:
            raise MalformedRequest(f"unknown request type {data['type']!r}")
        domain, message = data["domain"], data["message"]
        if not isinstance(domain, Mapping) or not isinstance(message, Mapping):
            raise MalformedRequest("domain and message must be objects")
        if domain.get("name") != DOMAIN_NAME or domain.get("version") != DOMAIN_VERSION:
            raise MalformedRequest(f"domain must be {DOMAIN_NAME!r} version {DOMAIN_VERSION!r}")
        if not set(domain) <= {"name", "version", "chainId", "verifyingContract"}:
            raise MalformedRequest("unknown domain field")
        fields = request_type.FIELDS
        if set(message) != {eip for _, eip, _ in fields}:
            raise MalformedRequest(
                f"{request_type.PRIMARY_TYPE} has exactly the fields "
                + ", ".join(eip for _, eip, _ in fields)
            )
        kwargs = {name: _from_json_value(eip, sol, message[eip]) for name, eip, sol in fields}
        signature = _from_json_value("signature", "bytes", data["signature"])
        request = request_type(**kwargs)
        return SignedRequest(
            request, domain.get("chainId", 0), domain.get("verifyingContract"), signature
        )


def sign_request(
    signer: Identity | LocalAccount,
    request: R,
    chain_id: int,
    *,
    verifying_contract: str | None = None,
) -> SignedRequest[R]:
    """Sign ``request`` with the account it names, for ``chain_id`` (and the contract, if given).

    Raises :class:`WrongSigner` if ``signer`` is not the account the request names.
    """
    account = signer.account if isinstance(signer, Identity) else signer
    if account.address != request.signer_address:
        raise WrongSigner(
            f"{request.PRIMARY_TYPE} names {request.signer_address} as its signer, "
            f"not {account.address}"
        )
    contract = _check_domain(chain_id, verifying_contract)
    signed = account.sign_message(_signable(request, chain_id, contract))
    return SignedRequest(request, chain_id, contract, bytes(signed.signature))


# ---------------------------------------------------------------- verification

_VERIFIED: Final = object()


@dataclass(frozen=True, slots=True)
class VerifiedRequest(Generic[R]):
    """A request whose signature, signer, chain, expiry and nonce were checked.

    Made only by :func:`verify_request`; services take this type, never a raw request.
    """

    request: R
    signer: str
    chain_id: int
    digest: bytes
    _proof: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._proof is not _VERIFIED:
            raise TypeError("a VerifiedRequest is made only by verify_request")


class NonceStore(Protocol):
    """Remembers which (account, nonce) pairs were used, until their request expires."""

    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """Atomically record the pair; ``False`` if it is already held and unexpired.

        Entries whose ``expires`` ≤ ``now`` may be forgotten: their requests are
        refused as expired anyway.
        """
        ...


@overload
def verify_request(
    signed: SignedRequest[Any],
    chain_id: int,
    now: int,
    nonce_store: NonceStore,
    *,
    expect: type[R],
    verifying_contract: str | None = None,
    max_lifetime: int = MAX_LIFETIME_S,
) -> VerifiedRequest[R]: ...


@overload
def verify_request(
    signed: SignedRequest[R],
    chain_id: int,
    now: int,
    nonce_store: NonceStore,
    *,
    expect: None = None,
    verifying_contract: str | None = None,
    max_lifetime: int = MAX_LIFETIME_S,
) -> VerifiedRequest[R]: ...


def verify_request(
    signed: SignedRequest[Any],
    chain_id: int,
    now: int,
    nonce_store: NonceStore,
    *,
    expect: type[Request] | None = None,
    verifying_contract: str | None = None,
    max_lifetime: int = MAX_LIFETIME_S,
) -> VerifiedRequest[Any]:
    """Check a signed request and record its nonce; the only way to a :class:`VerifiedRequest`.

    ``chain_id`` and ``verifying_contract`` are the service's own, never the
    request's; ``now`` is Unix seconds; ``expect`` restricts the request type.
    Refusals, in the order checked: :class:`UnexpectedRequestType`,
    :class:`WrongChain`, :class:`SignatureInvalid`, :class:`WrongSigner`,
    :class:`SignatureExpired`, :class:`ExpiryTooFar`, :class:`ReplayedRequest`. Only
    a request that passes every other check uses up its nonce.
    """
    request = signed.request
    if expect is not None and not isinstance(request, expect):
        raise UnexpectedRequestType(
            f"this service accepts {expect.PRIMARY_TYPE}, not {request.PRIMARY_TYPE}"
        )
    contract = _check_domain(chain_id, verifying_contract)
    if signed.chain_id != chain_id or signed.verifying_contract != contract:
        raise WrongChain(
            f"the request was signed for chain {signed.chain_id}"
            + (f" contract {signed.verifying_contract}" if signed.verifying_contract else "")
            + f"; this service is on chain {chain_id}"
            + (f" contract {contract}" if contract else "")
        )
    # Recover under the service's own domain, so nothing the request claims is trusted.
    digest = eip712_digest(request, chain_id, contract)
    try:
        recovered = _recover(digest, signed.signature)
    except (BadSignature, ValueError) as exc:
        raise SignatureInvalid(
            f"the signature cannot be recovered ({type(exc).__name__})"
        ) from None
    if recovered != request.signer_address:
        raise WrongSigner(
            f"the signature is not by {request.signer_address}: the request was altered "
            "or signed by another account"
        )
    expires = request.request_expires
    if expires <= now:
        raise SignatureExpired(f"the request expired {now - expires} s ago; sign a fresh one")
    if expires > now + max_lifetime:
        raise ExpiryTooFar(
            f"the request expires in {expires - now} s; services accept at most {max_lifetime} s"
        )
    if not nonce_store.remember(request.signer_address, request.request_nonce, expires, now):
        raise ReplayedRequest(
            f"{request.signer_address} already used nonce 0x{request.request_nonce.hex()} "
            "(a replayed request)"
        )
    return VerifiedRequest(request, recovered, chain_id, digest, _VERIFIED)


# ---------------------------------------------------------------- nonce stores


class MemoryNonceStore:
    """A thread-safe in-process :class:`NonceStore` (forgets everything on restart)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, bytes], int] = {}
        # A heap of (expires, key) makes pruning O(log n) per entry.
        self._heap: list[tuple[int, tuple[str, bytes]]] = []

    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """See :meth:`NonceStore.remember`."""
        key = (account.lower(), bytes(nonce))
        with self._lock:
            self._prune(now)
            if key in self._expiry:
                return False
            self._expiry[key] = expires
            heapq.heappush(self._heap, (expires, key))
            return True

    def _prune(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires:
                del self._expiry[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)


class SqliteNonceStore:
    """A :class:`NonceStore` in a SQLite file: survives restarts, shared by processes.

    Thread-safe. Each check-and-insert is one statement, so one transaction: two
    processes on the same file cannot both accept a nonce. Expired rows are deleted
    at most once a second. With ``durable=False``
    (the default) a commit survives a process crash but the last moments before an OS
    crash or power loss may be lost; ``durable=True`` syncs every commit.
    """

    _SCHEMA_VERSION: Final = 1
    _PRUNE_EVERY_S: Final = 1

    def __init__(self, path: Path | str, *, durable: bool = False) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._pruned = -(2**63)  # the `now` of the last pruning of expired rows
        try:
            self._lock_fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RequestRefused(f"cannot open the nonce store {self._path}: {exc}") from None
        try:
            self._db = sqlite3.connect(
                self._path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, self._SCHEMA_VERSION):
                raise RequestRefused(
                    f"{self._path} is a nonce store of schema {version}; this datagora "
                    f"reads schema {self._SCHEMA_VERSION}"
                )
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS nonces ("
                " account TEXT NOT NULL, nonce BLOB NOT NULL, expires INTEGER NOT NULL,"
                " PRIMARY KEY (account, nonce)) WITHOUT ROWID;"
                "CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires);"
                f"PRAGMA user_version={self._SCHEMA_VERSION};"
            )
        except (sqlite3.Error, RequestRefused) as exc:
            os.close(self._lock_fd)
            if isinstance(exc, RequestRefused):
                raise
            raise RequestRefused(f"cannot open the nonce store {self._path}: {exc}") from None

    def remember(self, account: str, nonce: bytes, expires: int, now: int) -> bool:
        """See :meth:`NonceStore.remember`."""
        with self._lock, self._flocked():
            if now - self._pruned >= self._PRUNE_EVERY_S:
                self._db.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
                self._pruned = now
            # One statement, so one transaction: the pair is inserted, or an expired
            # row of it (not pruned yet) is taken over; an unexpired one changes nothing.
            cursor = self._db.execute(
                "INSERT INTO nonces (account, nonce, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (account, nonce) DO UPDATE SET expires = excluded.expires"
                " WHERE nonces.expires <= ?",
                (account.lower(), bytes(nonce), expires, now),
            )
            return cursor.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    @contextlib.contextmanager
    def _flocked(self) -> Iterator[None]:
        # Processes sharing the file queue on a kernel lock, woken as soon as it is
        # free; SQLite's own busy handler would sleep 1, 2, 5… ms between retries.
        if self._lock_fd < 0:
            raise RequestRefused(f"the nonce store {self._path} is closed")
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the database; closing again does nothing, any other use raises."""
        with self._lock:
            self._db.close()
            if self._lock_fd >= 0:
                # Forgotten at once: a later flock must not land on whatever file
                # reuses the descriptor's number.
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> SqliteNonceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
