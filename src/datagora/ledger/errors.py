"""Errors of the ledger: the chain could not be reached, or a contract refused a call.

A refused call raises the :class:`ContractRuleError` subclass that names the
broken rule (see :mod:`datagora.ledger.reverts`); all are :class:`DatagoraError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datagora.errors import DatagoraError, NotFoundError, Unreachable

__all__ = [
    "ChainError",
    "ChainUnreachable",
    "ContractRuleError",
    "InsufficientFunds",
    "InvalidArgument",
    "InvalidState",
    "LimitExceeded",
    "NoDatatoken",
    "NotAuthorized",
    "NotController",
    "NotFound",
    "OrderExpired",
    "PriceAboveMaximum",
    "RpcError",
    "SignatureError",
]


class ChainError(DatagoraError):
    """The chain could not be reached or answered something unexpected."""


class ChainUnreachable(ChainError, Unreachable):
    """The chain did not answer at all (nothing listens at its URL, or it timed out)."""


class RpcError(ChainError):
    """The node answered a JSON-RPC request with an error."""

    def __init__(self, method: str, error: Any) -> None:
        self.method = method
        self.error = error
        detail = error.get("message", error) if isinstance(error, Mapping) else error
        super().__init__(f"{method}: {detail}")


class ContractRuleError(DatagoraError):
    """A contract refused a call: a rule of the ledger was broken.

    ``reason`` is the revert reason the contract gave.
    """

    tx_hash: str | None = None
    """The transaction's hash (``0x``-hex) when one was sent and mined reverted (a node
    such as Hardhat mines it even as the send reports the revert), else None."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or reason)


class NotController(ContractRuleError):
    """Only the dataset's controller (holder of its data NFT) may do this."""


class NotAuthorized(ContractRuleError):
    """The caller lacks the role this call needs."""


class NoDatatoken(ContractRuleError):
    """The account holds no datatoken (or not enough) to order or transfer."""


class InsufficientFunds(ContractRuleError):
    """The account's token balance or allowance is too small."""


class OrderExpired(ContractRuleError):
    """The order or grant is past its expiry."""


class PriceAboveMaximum(ContractRuleError):
    """The price moved above the buyer's maximum (slippage guard)."""


class TermsChanged(ContractRuleError):
    """The service's terms changed after the buyer looked: the order would expire
    before the buyer's minimum (the terms guard, like the slippage guard)."""


class InvalidArgument(ContractRuleError):
    """An argument was refused by the contract (zero address, bad size, bad value)."""


class NotFound(ContractRuleError, NotFoundError):
    """The dataset, request, service or record does not exist."""


class InvalidState(ContractRuleError):
    """The object is not in a state that allows this (disabled, already granted, revoked…)."""


class SignatureError(ContractRuleError):
    """A signature (permit or typed request) was invalid, expired or replayed."""


class LimitExceeded(ContractRuleError):
    """A per-address limit, size cap or fee bound was exceeded."""
