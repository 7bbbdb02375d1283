"""The errors of signed requests and nonce stores: one tree under :class:`RequestRefused`.

A service that refuses a ``datagora.signed-request.v1`` raises the subclass that
says why; a nonce store that cannot be opened or read refuses too, since no
request can be checked against it.
"""

from __future__ import annotations

from datagora.errors import DatagoraError

__all__ = [
    "ExpiryTooFar",
    "MalformedRequest",
    "NonceFileCorrupt",
    "ReplayedRequest",
    "RequestRefused",
    "SignatureExpired",
    "SignatureInvalid",
    "UnexpectedRequestType",
    "WrongChain",
    "WrongSigner",
]


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


class NonceFileCorrupt(RequestRefused):
    """A nonce file holds a damaged record before its last one."""
