"""The owner's signed request to a compute node: list, review, approve or deny jobs.

An :class:`~datagora.compute.requests.OwnerJobRequest` is an EIP-712 typed request
(same JSON form and nonce/expiry rules as every other; its domain names the
deployment's ComputeRegistry as ``verifyingContract``) signed by the account it names
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
from typing import Any, Final

from datagora.compute.requests import OWNER_ACTIONS, OwnerJobRequest
from datagora.crypto.eip712 import SignedRequest, new_nonce, sign_request
from datagora.crypto.errors import MalformedRequest
from datagora.crypto.keys import Identity

__all__ = [
    "OWNER_ACTIONS",
    "OwnerJobRequest",
    "encode_header",
    "parse_owner_request",
    "reason_hash",
    "sign_owner_request",
]

_ZERO: Final = bytes(32)


def reason_hash(reason: str) -> bytes:
    """What a denial signs: SHA-256 of the reason's UTF-8 text (zero bytes for none)."""
    return hashlib.sha256(reason.encode()).digest() if reason else _ZERO


def sign_owner_request(
    owner: Identity,
    chain_id: int,
    action: str,
    job: int = 0,
    reason: str = "",
    lifetime: int = 120,
    *,
    verifying_contract: str,
) -> SignedRequest[OwnerJobRequest]:
    """A fresh signed :class:`OwnerJobRequest` for the deployment whose ComputeRegistry
    is ``verifying_contract``."""
    request = OwnerJobRequest(
        owner=owner.address,
        job=job,
        action=action,
        reason=reason_hash(reason),
        nonce=new_nonce(),
        expires=int(time.time()) + lifetime,
    )
    return sign_request(owner, request, chain_id, verifying_contract=verifying_contract)


def encode_header(signed: SignedRequest[Any]) -> str:
    """A signed request as the base64url text of the ``X-Datagora-Request`` header."""
    return base64.urlsafe_b64encode(json.dumps(signed.to_json()).encode()).decode()


def parse_owner_request(data: Mapping[str, Any]) -> SignedRequest[OwnerJobRequest]:
    """Parse the JSON form (shapes and ranges only; ``verify_request`` checks the rest)."""
    signed = SignedRequest.from_json(data)
    if not isinstance(signed.request, OwnerJobRequest):
        raise MalformedRequest(f"owner endpoints take an {OwnerJobRequest.PRIMARY_TYPE}")
    return signed
