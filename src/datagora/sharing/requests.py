"""The signed requests of the sharing layer (``datagora.signed-request.v1`` types).

A consumer asks each proxy for a re-encryption fragment with a
:class:`FragmentRequest`; an owner asks its agent to delegate key fragments with a
:class:`DelegationRequest`. Both are EIP-712 structs signed and verified by
:mod:`datagora.crypto.eip712`; their schema is in ``docs/sharing.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from datagora.crypto.eip712 import Request, register_request
from datagora.crypto.errors import MalformedRequest

__all__ = ["DelegationRequest", "FragmentRequest"]


@register_request
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


@register_request
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
