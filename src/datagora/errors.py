"""The one exception tree of datagora.

Every error a user can cause is a :class:`DatagoraError`; its message says what
went wrong and, where it can, what to do next. Callers may catch the base class
or a precise subclass.
"""

from __future__ import annotations


class DatagoraError(Exception):
    """Base class of every error datagora raises on purpose."""


class ConfigError(DatagoraError):
    """A configuration, deployment record or network file is missing or invalid."""


class ChainError(DatagoraError):
    """The chain could not be reached or answered something unexpected."""


class ContractRuleError(DatagoraError):
    """A contract refused a call: a rule of the ledger was broken.

    ``reason`` is the revert reason the contract gave.
    """

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


class InvalidArgument(ContractRuleError):
    """An argument was refused by the contract (zero address, bad size, bad value)."""


class NotFound(ContractRuleError):
    """The dataset, request, service or record does not exist."""


class InvalidState(ContractRuleError):
    """The object is not in a state that allows this (disabled, already granted, revoked…)."""


class SignatureError(ContractRuleError):
    """A signature (permit or typed request) was invalid, expired or replayed."""


class LimitExceeded(ContractRuleError):
    """A per-address limit, size cap or fee bound was exceeded."""


class NotFoundError(DatagoraError):
    """Something asked for does not exist (a dataset in the catalog, a file, a record)."""
