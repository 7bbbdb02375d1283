"""The errors of the sharing layer: one tree under :class:`SharingError`.

Proxies answer a refusal with a short code (``{"error": code, "detail": ...}``);
:data:`REFUSALS` maps each code to the error a consumer or owner sees, so callers
can catch a precise reason (``GrantRevoked``) or broadly (``AccessRefused``).
No message ever holds a key, a fragment or plaintext.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from datagora.errors import DatagoraError
from datagora.ledger.errors import NotController

if TYPE_CHECKING:
    from datagora.sharing.answers import Evidence

__all__ = [
    "REFUSALS",
    "AccessRefused",
    "ConditionFailed",
    "DatasetInactive",
    "DelegateRevoked",
    "DelegationFailed",
    "DenyListed",
    "ExpiredOrder",
    "ForgedFragment",
    "GrantExpired",
    "GrantRevoked",
    "KfragRefused",
    "LogCorrupt",
    "NoKeyFragment",
    "NoOrder",
    "NotEnoughProxies",
    "ProxyUnavailable",
    "RequestDenied",
    "RequestPending",
    "SharingError",
    "SignatureRefused",
]


class SharingError(DatagoraError):
    """Sharing a data key failed; the subclass says why."""

    evidence: dict[str, Evidence]
    """Per proxy that signed a bad fragment during a failed key fetch: its evidence
    (what :func:`~datagora.sharing.consumer.report_fault` files); else empty."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.evidence = {}


class AccessRefused(SharingError):
    """The proxies refused: the ledger does not let this account read this dataset now."""


class NoOrder(AccessRefused):
    """No order and no grant for this dataset: buy and order it, or request access."""


class ExpiredOrder(AccessRefused):
    """The account's order for this dataset has expired: order again."""


class GrantRevoked(AccessRefused):
    """The owner revoked this account's grant."""


class GrantExpired(AccessRefused):
    """This account's grant has expired: request access again."""


class RequestDenied(AccessRefused):
    """The owner denied this account's access request."""


class RequestPending(AccessRefused):
    """This account's access request waits for the owner's decision."""


class DatasetInactive(AccessRefused):
    """The dataset is disabled or retired: no order or grant serves it now."""


class DenyListed(AccessRefused):
    """The owner deny-listed this account for this dataset."""


class ConditionFailed(AccessRefused):
    """The dataset's access condition does not hold for this account now (the message
    names the terms that failed), or it cannot be read."""


class SignatureRefused(SharingError):
    """A proxy refused the signed request: bad or foreign signature, expired, or replayed."""


class NoKeyFragment(SharingError):
    """The proxies hold no key fragment for this account yet: the owner's agent has not
    delegated (wait a moment after ordering, or ask the owner)."""


class KfragRefused(SharingError):
    """A proxy refused a key fragment (malformed, or not made for this consumer)."""


class NotEnoughProxies(SharingError):
    """Fewer than ``threshold`` proxies answered with a valid fragment."""


class ForgedFragment(NotEnoughProxies):
    """Too few valid fragments because some proxies returned forged or altered ones."""


class ProxyUnavailable(SharingError):
    """A proxy could not be reached or answered something unexpected."""


class DelegationFailed(SharingError):
    """Fewer than ``threshold`` proxies accepted their key fragment."""


class DelegateRevoked(SharingError):
    """The agent key is not (or no longer) authorised on chain by the dataset's owner."""


REFUSALS: Final[dict[str, type[DatagoraError]]] = {
    "no_order": NoOrder,
    "order_expired": ExpiredOrder,
    "grant_revoked": GrantRevoked,
    "grant_expired": GrantExpired,
    "request_denied": RequestDenied,
    "request_pending": RequestPending,
    "deny_listed": DenyListed,
    "dataset_inactive": DatasetInactive,
    "condition_failed": ConditionFailed,
    "condition_unreadable": ConditionFailed,
    "bad_signature": SignatureRefused,
    "expired_signature": SignatureRefused,
    "replayed": SignatureRefused,
    "no_kfrag": NoKeyFragment,
    "not_controller": NotController,
    "not_delegate": DelegateRevoked,
    "wrong_proxy": KfragRefused,
    "batch_exists": KfragRefused,
    "wrong_service": SharingError,
    "bad_kfrag": KfragRefused,
    "malformed": SharingError,
    "chain_unavailable": ProxyUnavailable,
}
"""Refusal code (in a proxy's JSON answer) → the error it means."""


class LogCorrupt(SharingError):
    """An access log does not hash-chain: an entry was altered, removed or reordered."""


class BadEvidence(SharingError):
    """An evidence file that is not a ``datagora.proxy-fault-evidence.v1`` document, or
    whose signature does not name the proxy it says."""
