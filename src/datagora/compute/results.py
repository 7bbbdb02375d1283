"""Results and logs encrypted to the consumer (format ``datagora.compute-result.v1``).

A fresh 256-bit key encrypts the payload with AES-256-GCM; the key is wrapped with
Umbral (:func:`datagora.crypto.pre.wrap_key`) to the consumer's Umbral public key —
the one the consumer put in its on-chain order, so the node never takes a key from
an unauthenticated request. Only the consumer's account secret opens it
(:func:`open_result`, through :func:`datagora.crypto.pre.unwrap_own`).

Layout: ``b"DGCR1" || uint32_be(len(header)) || header || nonce (12) || ciphertext+tag``,
where ``header`` is the wrapped key's JSON (``datagora.umbral-wrap.v1``). The
associated data binds the format, the job id (uint256, big-endian) and the kind
(``result`` or ``logs``), so a result cannot pass as another job's, or as logs.
The on-chain result hash is the SHA-256 of the whole sealed result.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Final

import umbral_pre
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from datagora.crypto.errors import DecryptionError, MalformedWrappedKey
from datagora.crypto.keys import Identity
from datagora.crypto.pre import WrappedKey, unwrap_own, wrap_key

__all__ = ["RESULT_FORMAT", "open_result", "seal_result"]

RESULT_FORMAT: Final = b"datagora.compute-result.v1"
_MAGIC: Final = b"DGCR1"
KINDS: Final = ("result", "logs")


def _ad(job: int, kind: str) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return RESULT_FORMAT + job.to_bytes(32, "big") + kind.encode()


def seal_result(consumer_key: bytes, plaintext: bytes, job: int, kind: str) -> bytes:
    """Encrypt `plaintext` (a result archive or logs) to the consumer's Umbral public key."""
    key = os.urandom(32)
    header = json.dumps(wrap_key(key, consumer_key).to_json(), sort_keys=True).encode()
    nonce = os.urandom(12)
    body = AESGCM(key).encrypt(nonce, plaintext, _ad(job, kind))
    return _MAGIC + struct.pack(">I", len(header)) + header + nonce + body


def _open_key(consumer: Identity, wrapped: WrappedKey, chain_id: int | None) -> bytes:
    if chain_id is not None:
        receiving = consumer.consumer_key(chain_id)
        if receiving.public_key == wrapped.delegating_key:
            try:
                return bytes(
                    umbral_pre.decrypt_original(
                        receiving.umbral_secret_key(), wrapped.umbral_capsule(), wrapped.ciphertext
                    )
                )
            except ValueError:
                raise DecryptionError("the result's key failed authentication") from None
    return unwrap_own(consumer, wrapped)


def open_result(
    consumer: Identity, sealed: bytes, job: int, kind: str, chain_id: int | None = None
) -> bytes:
    """Decrypt a sealed result or logs; raises :class:`DecryptionError` if not ours or altered.

    Results are sealed to the key the order carried: the consumer's wallet-derived
    key on ``chain_id`` (what the SDK orders with), or its account key.
    """
    if not sealed.startswith(_MAGIC) or len(sealed) < len(_MAGIC) + 4:
        raise DecryptionError("not a datagora compute result")
    (size,) = struct.unpack(">I", sealed[len(_MAGIC) : len(_MAGIC) + 4])
    start = len(_MAGIC) + 4
    try:
        wrapped = WrappedKey.from_json(json.loads(sealed[start : start + size]))
    except (ValueError, MalformedWrappedKey) as exc:
        raise DecryptionError(f"the result's key header is malformed: {exc}") from None
    key = _open_key(consumer, wrapped, chain_id)
    rest = sealed[start + size :]
    try:
        return AESGCM(key).decrypt(rest[:12], rest[12:], _ad(job, kind))
    except InvalidTag:
        raise DecryptionError(
            "the result failed authentication: altered, or for another job"
        ) from None
