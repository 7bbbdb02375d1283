"""The signed requests of the sharing layer (``datagora.signed-request.v1`` types).

A consumer asks each proxy for a re-encryption fragment with a
:class:`FragmentRequest`; an owner asks its agent to delegate key fragments with a
:class:`DelegationRequest`. Both are EIP-712 structs signed and verified by
:mod:`datagora.crypto.eip712`; their schema is in ``docs/sharing.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from datagora.crypto.eip712 import Request, register_request
from datagora.crypto.errors import MalformedRequest

__all__ = ["ZERO_ADDRESS", "DelegationRequest", "FragmentRequest", "check_threshold"]

ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"


def check_threshold(threshold: int, shares: int, error: type[Exception]) -> None:
    """Raise ``error`` unless ``1 ≤ threshold ≤ shares`` and, with more than one
    proxy, ``threshold ≥ 2``: with threshold 1 any single proxy could serve a consumer
    the ledger no longer allows, and the other proxies would add nothing."""
    if not 1 <= threshold <= shares:
        raise error(f"need 1 ≤ threshold ≤ proxies, got {threshold} of {shares}")
    if shares > 1 and threshold < 2:
        raise error(
            f"threshold 1 with {shares} proxies lets any one proxy open the key alone: "
            "use a threshold of at least 2 (or a single proxy)"
        )


@register_request
@dataclass(frozen=True, slots=True)
class FragmentRequest(Request):
    """A consumer asks the proxies to re-encrypt one dataset version's capsule for it.

    ``capsule`` is the SHA-256 of the capsule bytes (``WrappedKey.capsule_digest``);
    ``service`` is the audience: the datatoken service whose orders open the data
    (a proxy serves one). The same signed request goes to every proxy, and a proxy
    answers it as often as it comes (the access check runs every time): it is
    idempotent, so a proxy that forwards it to the others first starves nobody.
    """

    PRIMARY_TYPE: ClassVar[str] = "FragmentRequest"
    SIGNER: ClassVar[str] = "consumer"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("consumer", "consumer", "address"),
        ("dataset", "dataset", "uint256"),
        ("version", "version", "uint32"),
        ("service", "service", "uint32"),
        ("capsule", "capsule", "bytes32"),
        ("nonce", "nonce", "bytes32"),
        ("expires", "expires", "uint64"),
    )

    consumer: str
    dataset: int
    version: int
    service: int
    capsule: bytes
    nonce: bytes
    expires: int


@register_request
@dataclass(frozen=True, slots=True)
class DelegationRequest(Request):
    """A delegation of key fragments: the owner (or its agent) to one proxy, or the owner
    to its agent.

    ``delegator`` signs: the dataset's controller, or an agent key the controller
    authorised on chain (``AccessRegistry.is_delegate``). ``proxy`` is the proxy the
    delivery is addressed to (its fragment is sealed to that proxy's Umbral key);
    the zero address in a request to the agent, which delegates to all its proxies.
    ``grant`` is the AccessRegistry request id of the grant, or 0 when the consumer's
    basis is an order (automatic policy); ``consumer_key`` is the consumer's Umbral
    public key (33 bytes), which the agent also checks against the chain. ``batch``
    names the set of fragments this one belongs to: fragments of one
    ``generate_kfrags`` call combine, fragments of two different calls do not, so a
    proxy keeps them apart and a consumer combines only fragments of one batch.
    """

    PRIMARY_TYPE: ClassVar[str] = "DelegationRequest"
    SIGNER: ClassVar[str] = "delegator"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("delegator", "delegator", "address"),
        ("proxy", "proxy", "address"),
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

    delegator: str
    proxy: str
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
        check_threshold(self.threshold, self.shares, MalformedRequest)
