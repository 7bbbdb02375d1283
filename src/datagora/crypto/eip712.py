"""The EIP-712 codec of signed requests to datagora services (``datagora.signed-request.v1``).

Every request a consumer or owner sends to an agent, a proxy or a compute node is a
typed-data message (EIP-712) signed by the account it names, under the domain
``{name: "datagora", version: "1", chainId[, verifyingContract]}``. It carries a
random 32-byte nonce and an expiry (Unix seconds). :func:`verify_request` is the one
place such a request becomes a :class:`VerifiedRequest`: it checks the chain, the
signature against the named account, the expiry window and, through a
:class:`~datagora.crypto.nonces.NonceStore`, that the request was not seen before.

A service keeps its own nonce store, so one signed request may be presented once to
each of several services (a consumer asks m proxies with one signature), never twice
to the same one. The request types live with the layers that serve them
(:mod:`datagora.sharing.requests`, :mod:`datagora.compute.requests`), each declared
as a :class:`Request` subclass and made known to :meth:`SignedRequest.from_json` by
:func:`register_request`. The types and their JSON form are specified in
``docs/sharing.md`` ("Signed requests").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Final, Generic, TypeVar, overload

from coincurve import PublicKey
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils.address import is_hex_address
from eth_utils.address import to_checksum_address as _to_checksum_address
from sha3 import keccak_256

from datagora.crypto.errors import (
    ExpiryTooFar,
    MalformedRequest,
    ReplayedRequest,
    SignatureExpired,
    SignatureInvalid,
    UnexpectedRequestType,
    WrongChain,
    WrongSigner,
)
from datagora.crypto.keys import Identity
from datagora.crypto.nonces import NonceStore

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "MAX_LIFETIME_S",
    "NONCE_SIZE",
    "REQUEST_TYPES",
    "SIGNED_FORMAT",
    "Request",
    "SignedRequest",
    "VerifiedRequest",
    "eip712_digest",
    "keccak",
    "new_nonce",
    "register_request",
    "sign_request",
    "signed_request_schema",
    "to_checksum_address",
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


def new_nonce() -> bytes:
    """A fresh random 32-byte nonce."""
    return os.urandom(NONCE_SIZE)


# ---------------------------------------------------------------- field values

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


R = TypeVar("R", bound=Request)

REQUEST_TYPES: Final[dict[str, type[Request]]] = {}
"""The registered request types by EIP-712 name: what :meth:`SignedRequest.from_json` parses."""


def register_request(cls: type[R]) -> type[R]:
    """Class decorator: make a :class:`Request` subclass known to :meth:`SignedRequest.from_json`.

    Put it above ``@dataclass`` (the slotted class is a new class object).
    """
    if not cls.PRIMARY_TYPE or REQUEST_TYPES.setdefault(cls.PRIMARY_TYPE, cls) is not cls:
        raise ValueError(f"request type {cls.PRIMARY_TYPE!r} is unnamed or registered twice")
    return cls


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


def _field_schema(sol_type: str) -> dict[str, Any]:
    if sol_type == "address":
        return {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
    if sol_type == "uint256":
        return {"type": "string", "pattern": "^(0|[1-9][0-9]{0,77})$"}
    if match := _UINT_RE.fullmatch(sol_type):
        return {"type": "integer", "minimum": 0, "maximum": 2 ** int(match.group(1)) - 1}
    if sol_type == "bytes32":
        return {"type": "string", "pattern": "^0x[0-9a-f]{64}$"}
    if sol_type == "bytes":
        return {"type": "string", "pattern": f"^0x([0-9a-f]{{2}}){{0,{_MAX_BYTES}}}$"}
    return {"type": "string", "maxLength": _MAX_STRING}


def signed_request_schema(request_type: type[Request]) -> dict[str, Any]:
    """The JSON Schema of a ``datagora.signed-request.v1`` object carrying a
    ``request_type`` (for OpenAPI documents: what :meth:`SignedRequest.from_json` parses)."""
    fields = request_type.FIELDS
    return {
        "type": "object",
        "title": f"Signed{request_type.PRIMARY_TYPE}",
        "required": ["format", "type", "domain", "message", "signature"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": SIGNED_FORMAT},
            "type": {"const": request_type.PRIMARY_TYPE},
            "domain": {
                "type": "object",
                "required": ["name", "version", "chainId"],
                "additionalProperties": False,
                "properties": {
                    "name": {"const": DOMAIN_NAME},
                    "version": {"const": DOMAIN_VERSION},
                    "chainId": {"type": "integer", "minimum": 1},
                    "verifyingContract": _field_schema("address"),
                },
            },
            "message": {
                "type": "object",
                "required": [eip for _, eip, _ in fields],
                "additionalProperties": False,
                "properties": {eip: _field_schema(sol) for _, eip, sol in fields},
            },
            "signature": {"type": "string", "pattern": "^0x[0-9a-f]{130}$"},
        },
    }


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


@overload
def verify_request(
    signed: SignedRequest[Any],
    chain_id: int,
    now: int,
    nonce_store: NonceStore | None,
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
    nonce_store: NonceStore | None,
    *,
    expect: None = None,
    verifying_contract: str | None = None,
    max_lifetime: int = MAX_LIFETIME_S,
) -> VerifiedRequest[R]: ...


def verify_request(
    signed: SignedRequest[Any],
    chain_id: int,
    now: int,
    nonce_store: NonceStore | None,
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
    a request that passes every other check uses up its nonce. ``nonce_store=None``
    is for idempotent requests (a proxy's fragment request: answering it twice gives
    nothing new), which are checked in every other way and may be presented again.
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
    if nonce_store is not None and not nonce_store.remember(
        request.signer_address, request.request_nonce, expires, now
    ):
        raise ReplayedRequest(
            f"{request.signer_address} already used nonce 0x{request.request_nonce.hex()} "
            "(a replayed request)"
        )
    return VerifiedRequest(request, recovered, chain_id, digest, _VERIFIED)
