"""The errors of signed requests and nonce stores: one tree under :class:`RequestRefused`.

A service that refuses a ``datagora.signed-request.v1`` raises the subclass that
says why; a nonce store that cannot be opened or read refuses too, since no
request can be checked against it.
"""

from __future__ import annotations

from datagora.errors import DatagoraError

__all__ = [
    "AccountExists",
    "BadFragment",
    "BadPrivateKey",
    "CorruptKeystore",
    "CryptoError",
    "DecryptionError",
    "ExpiryTooFar",
    "KeystoreError",
    "MalformedRequest",
    "MalformedWrappedKey",
    "NonceFileCorrupt",
    "NotEnoughFragments",
    "PreError",
    "ReplayedRequest",
    "RequestRefused",
    "SignatureExpired",
    "SignatureInvalid",
    "UnexpectedRequestType",
    "UnknownAccount",
    "UnwrapFailed",
    "WrongChain",
    "WrongKey",
    "WrongPassword",
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


class CryptoError(DatagoraError):
    """A cryptographic operation was refused (bad key, bad parameters)."""


class DecryptionError(CryptoError):
    """Ciphertext failed authentication: it was altered, moved, or the key is wrong."""


class PreError(CryptoError):
    """A proxy re-encryption step was refused."""


class BadFragment(PreError):
    """A key or capsule fragment is malformed, forged, tampered with or meant for others."""


class NotEnoughFragments(PreError):
    """Fewer distinct capsule fragments than the threshold were given."""


class WrongKey(PreError):
    """The wrapped key was made for another key than the one given."""


class UnwrapFailed(PreError):
    """The wrapped key's ciphertext failed authentication: it was altered."""


class MalformedWrappedKey(PreError):
    """A wrapped-key record is not valid ``datagora.umbral-wrap.v1``."""


class KeystoreError(DatagoraError):
    """A keystore could not be created, found, read or opened."""


class WrongPassword(KeystoreError):
    """The password does not open this keystore."""


class UnknownAccount(KeystoreError):
    """No keystore in the directory has this address or name."""


class AccountExists(KeystoreError):
    """A keystore for this address, or with this name, already exists."""


class BadPrivateKey(KeystoreError):
    """The private key given is not 32 bytes of hex, or is not a valid secp256k1 secret."""


class CorruptKeystore(KeystoreError):
    """A keystore file is not valid keystore v3 JSON, or does not match its address."""
