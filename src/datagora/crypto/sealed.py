"""X25519 sealed boxes, and wrapping a :class:`DataKey` for its owner (``datagora.seal.v1``).

A sealed box lets anyone encrypt to a recipient's X25519 public key; only the holder
of the private key opens it. Construction (specified in ``docs/formats.md``, section
"Sealed key wrap"): a fresh ephemeral X25519 key pair per box, HKDF-SHA256 over the
shared secret with both public keys as salt, and AES-256-GCM with a zero nonce (the
derived key is used exactly once). The caller's ``context`` is the associated data, so
a box made for one purpose does not open for another.

This is the interim owner-only key wrap; the sharing layer replaces it with Umbral
proxy re-encryption capsules.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datagora.crypto.aead import DATA_KEY_SIZE, DATASET_ID_SIZE, MAX_VERSION, TAG_SIZE, DataKey
from datagora.crypto.errors import CryptoError, DecryptionError

__all__ = [
    "SEAL_OVERHEAD",
    "WRAP_SCHEME",
    "WrappedKey",
    "open_sealed",
    "public_key_bytes",
    "public_key_from_bytes",
    "seal",
    "unwrap_data_key",
    "wrap_data_key",
]

_PUBLIC_KEY_SIZE: Final = 32
_HKDF_INFO: Final = b"datagora.seal.v1"
_ZERO_NONCE: Final = bytes(12)
SEAL_OVERHEAD: Final = _PUBLIC_KEY_SIZE + TAG_SIZE
WRAP_SCHEME: Final = "x25519-hkdf-sha256-aes256gcm-v1"
_WRAP_CONTEXT_DOMAIN: Final = b"datagora.datakey.v1"


def public_key_bytes(key: X25519PublicKey) -> bytes:
    """The 32-byte raw encoding of an X25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_bytes(raw: bytes) -> X25519PublicKey:
    """Parse a 32-byte raw X25519 public key."""
    if len(raw) != _PUBLIC_KEY_SIZE:
        raise CryptoError(f"an X25519 public key is {_PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def _box_key(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_pub + recipient_pub,
        info=_HKDF_INFO,
    ).derive(shared)


def seal(recipient: X25519PublicKey, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt ``plaintext`` to ``recipient``; returns ``ephemeral_pub (32) || ct || tag (16)``.

    ``context`` is authenticated but not encrypted; the same ``context`` must be
    given to :func:`open_sealed`.
    """
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = public_key_bytes(ephemeral.public_key())
    recipient_pub = public_key_bytes(recipient)
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError:
        # cryptography refuses low-order points (all-zero shared secret).
        raise CryptoError("the recipient's X25519 public key is invalid") from None
    key = _box_key(shared, ephemeral_pub, recipient_pub)
    return ephemeral_pub + AESGCM(key).encrypt(_ZERO_NONCE, plaintext, context)


def open_sealed(recipient: X25519PrivateKey, sealed: bytes, context: bytes) -> bytes:
    """Open a box made by :func:`seal` for ``recipient``'s public key.

    Raises :class:`DecryptionError` if the box was altered, was made for another key,
    or ``context`` differs.
    """
    if len(sealed) < SEAL_OVERHEAD:
        raise DecryptionError(f"a sealed box is at least {SEAL_OVERHEAD} bytes")
    ephemeral_pub = sealed[:_PUBLIC_KEY_SIZE]
    recipient_pub = public_key_bytes(recipient.public_key())
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
    except ValueError:
        raise DecryptionError("the sealed box carries an invalid ephemeral key") from None
    key = _box_key(shared, ephemeral_pub, recipient_pub)
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, sealed[_PUBLIC_KEY_SIZE:], context)
    except InvalidTag:
        raise DecryptionError(
            "the sealed box failed authentication: altered, for another key, or another context"
        ) from None


def _wrap_context(dataset_id: bytes, version: int) -> bytes:
    if len(dataset_id) != DATASET_ID_SIZE:
        raise CryptoError(f"dataset id must be {DATASET_ID_SIZE} bytes")
    if not 0 <= version <= MAX_VERSION:
        raise CryptoError(f"version must be in 0..{MAX_VERSION}, got {version}")
    return _WRAP_CONTEXT_DOMAIN + dataset_id + struct.pack(">I", version)


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key sealed to one recipient, as stored in a manifest.

    ``recipient`` is the recipient's raw X25519 public key (so a holder of several
    keys knows which one opens it); ``sealed`` is the sealed box.
    """

    scheme: str
    recipient: bytes
    sealed: bytes

    def __post_init__(self) -> None:
        if self.scheme != WRAP_SCHEME:
            raise CryptoError(f"unknown key wrap scheme {self.scheme!r}; expected {WRAP_SCHEME!r}")
        if len(self.recipient) != _PUBLIC_KEY_SIZE:
            raise CryptoError(f"wrapped key recipient must be {_PUBLIC_KEY_SIZE} bytes")
        if len(self.sealed) != SEAL_OVERHEAD + DATA_KEY_SIZE:
            raise CryptoError(
                f"a sealed data key is {SEAL_OVERHEAD + DATA_KEY_SIZE} bytes, "
                f"got {len(self.sealed)}"
            )


def wrap_data_key(
    key: DataKey, owner: X25519PublicKey, dataset_id: bytes, version: int
) -> WrappedKey:
    """Seal ``key`` to ``owner``, bound to (``dataset_id``, ``version``)."""
    sealed = seal(owner, key.raw(), _wrap_context(dataset_id, version))
    return WrappedKey(WRAP_SCHEME, public_key_bytes(owner), sealed)


def unwrap_data_key(
    wrapped: WrappedKey, owner: X25519PrivateKey, dataset_id: bytes, version: int
) -> DataKey:
    """Open a :class:`WrappedKey` with the owner's private key.

    Raises :class:`DecryptionError` if it was made for another key, dataset or version.
    """
    if public_key_bytes(owner.public_key()) != wrapped.recipient:
        raise DecryptionError("this data key was wrapped for a different X25519 key")
    return DataKey(open_sealed(owner, wrapped.sealed, _wrap_context(dataset_id, version)))
