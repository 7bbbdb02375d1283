"""The owner's signed request to a compute node: list, review, approve or deny jobs.

An ``OwnerJobRequest`` is an EIP-712 typed request (same domain, JSON form and
nonce/expiry rules as :mod:`datagora.crypto.signed`) signed by the account it names
in ``owner``. The node accepts it only when that account is, on chain, the
controller of the job's dataset (for ``list``: it lists only the pending jobs of the
datasets the signer controls). ``job`` is the job id (0 for ``list``); ``reason`` is
the SHA-256 of the denial reason's UTF-8 text (zero bytes for the other actions), so
the reason recorded on chain is the one the owner signed.

JSON form: ``{"format": "datagora.signed-request.v1", "type": "OwnerJobRequest",
"domain": {...}, "message": {"owner": "0x…", "job": "<decimal>", "action": "deny",
"reason": "0x<64 hex>", "nonce": "0x<64 hex>", "expires": <int>}, "signature":
"0x<130 hex>"}`` — sent base64url-encoded in the ``X-Datagora-Request`` header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from datagora.crypto.keys import Identity
from datagora.crypto.signed import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    SIGNED_FORMAT,
    MalformedRequest,
    Request,
    SignedRequest,
    new_nonce,
    sign_request,
)

__all__ = [
    "OWNER_ACTIONS",
    "OwnerJobRequest",
    "encode_header",
    "parse_owner_request",
    "reason_hash",
    "sign_owner_request",
]

OWNER_ACTIONS: Final = ("list", "review", "approve", "deny")
_ZERO: Final = bytes(32)


def reason_hash(reason: str) -> bytes:
    """What a denial signs: SHA-256 of the reason's UTF-8 text (zero bytes for none)."""
    return hashlib.sha256(reason.encode()).digest() if reason else _ZERO


@dataclass(frozen=True, slots=True)
class OwnerJobRequest(Request):
    """A dataset's controller acts on a job at its compute node."""

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


def sign_owner_request(
    owner: Identity, chain_id: int, action: str, job: int = 0, reason: str = "", lifetime: int = 120
) -> SignedRequest[OwnerJobRequest]:
    """A fresh signed :class:`OwnerJobRequest`."""
    request = OwnerJobRequest(
        owner=owner.address,
        job=job,
        action=action,
        reason=reason_hash(reason),
        nonce=new_nonce(),
        expires=int(time.time()) + lifetime,
    )
    return sign_request(owner, request, chain_id)


def encode_header(signed: SignedRequest[Any]) -> str:
    """A signed request as the base64url text of the ``X-Datagora-Request`` header."""
    return base64.urlsafe_b64encode(json.dumps(signed.to_json()).encode()).decode()


def _hex32(name: str, value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or value != value.lower():
        raise MalformedRequest(f"{name} is not 0x-prefixed lowercase hex")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise MalformedRequest(f"{name} is not hex") from None


def parse_owner_request(data: Mapping[str, Any]) -> SignedRequest[OwnerJobRequest]:
    """Parse the JSON form (shapes and ranges only; ``verify_request`` checks the rest)."""
    if not isinstance(data, Mapping) or data.get("format") != SIGNED_FORMAT:
        raise MalformedRequest(f"not a {SIGNED_FORMAT} object")
    if set(data) != {"format", "type", "domain", "message", "signature"}:
        raise MalformedRequest("a signed request has exactly: format type domain message signature")
    if data["type"] != OwnerJobRequest.PRIMARY_TYPE:
        raise MalformedRequest(f"owner endpoints take an {OwnerJobRequest.PRIMARY_TYPE}")
    domain, message = data["domain"], data["message"]
    if not isinstance(domain, Mapping) or not isinstance(message, Mapping):
        raise MalformedRequest("domain and message must be objects")
    if domain.get("name") != DOMAIN_NAME or domain.get("version") != DOMAIN_VERSION:
        raise MalformedRequest(f"domain must be {DOMAIN_NAME!r} version {DOMAIN_VERSION!r}")
    if not set(domain) <= {"name", "version", "chainId", "verifyingContract"}:
        raise MalformedRequest("unknown domain field")
    if set(message) != {eip for _, eip, _ in OwnerJobRequest.FIELDS}:
        raise MalformedRequest("OwnerJobRequest has exactly: owner job action reason nonce expires")
    job = message["job"]
    if not isinstance(job, str) or not job.isdigit() or job != str(int(job)):
        raise MalformedRequest("job is not a decimal string")
    request = OwnerJobRequest(
        owner=message["owner"],
        job=int(job),
        action=message["action"],
        reason=_hex32("reason", message["reason"]),
        nonce=_hex32("nonce", message["nonce"]),
        expires=message["expires"],
    )
    return SignedRequest(
        request,
        domain.get("chainId", 0),
        domain.get("verifyingContract"),
        _hex32("signature", data["signature"]),
    )
