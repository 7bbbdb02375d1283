"""AES-256-GCM encryption of dataset chunks (format ``datagora.chunk.v1``).

Each dataset version is encrypted under its own random 256-bit :class:`DataKey`.
Chunk ``i`` of a version is sealed with a nonce derived from ``i`` and a final-chunk
flag, and with associated data binding the dataset id, the version, ``i`` and the flag
(a STREAM-style construction). So a chunk moved to another position, another version
or another dataset, a stream cut short before its final chunk, or a chunk appended
after it, all fail authentication. The byte layouts are specified in
``docs/formats.md`` (section "Chunk encryption").
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from datagora.crypto.errors import CryptoError, DecryptionError

__all__ = [
    "CHUNK_AD_DOMAIN",
    "DATASET_ID_SIZE",
    "DATA_KEY_SIZE",
    "MAX_VERSION",
    "NONCE_SIZE",
    "TAG_SIZE",
    "ChunkCipher",
    "DataKey",
    "chunk_associated_data",
    "chunk_nonce",
]

DATA_KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
DATASET_ID_SIZE: Final = 32
MAX_VERSION: Final = 2**32 - 1
MAX_CHUNK_INDEX: Final = 2**64 - 1
CHUNK_AD_DOMAIN: Final = b"datagora.chunk.v1"


class DataKey:
    """A 256-bit symmetric data key for one dataset version.

    The raw bytes are reachable only through :meth:`raw`; ``repr`` and ``str``
    never show them, so a key cannot leak into a log or an exception by accident.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != DATA_KEY_SIZE:
            raise CryptoError(f"a data key must be exactly {DATA_KEY_SIZE} bytes")
        self._raw = raw

    @classmethod
    def generate(cls) -> DataKey:
        """Return a fresh key from the operating system's CSPRNG."""
        return cls(os.urandom(DATA_KEY_SIZE))

    def raw(self) -> bytes:
        """The 32 key bytes. Handle with care: never log or persist them in the clear."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        # Hash a constant so equal keys collide without exposing key bits via hash().
        return hash(DataKey)

    def __repr__(self) -> str:
        return "DataKey(<redacted>)"

    __str__ = __repr__


def _check_position(dataset_id: bytes, version: int, index: int) -> None:
    if not isinstance(dataset_id, bytes) or len(dataset_id) != DATASET_ID_SIZE:
        raise CryptoError(f"dataset id must be {DATASET_ID_SIZE} bytes")
    if not 0 <= version <= MAX_VERSION:
        raise CryptoError(f"version must be in 0..{MAX_VERSION}, got {version}")
    if not 0 <= index <= MAX_CHUNK_INDEX:
        raise CryptoError(f"chunk index must be in 0..{MAX_CHUNK_INDEX}, got {index}")


def chunk_nonce(index: int, final: bool) -> bytes:
    """The 12-byte GCM nonce of chunk ``index``: ``00 00 00 || final || uint64_be(index)``.

    The key is fresh for every version and each (index, final) pair is used at most
    once under it, so nonces never repeat under one key.
    """
    return b"\x00\x00\x00" + (b"\x01" if final else b"\x00") + struct.pack(">Q", index)


def chunk_associated_data(dataset_id: bytes, version: int, index: int, final: bool) -> bytes:
    """The associated data of a chunk (62 bytes).

    ``b"datagora.chunk.v1" || dataset_id (32) || uint32_be(version) ||
    uint64_be(index) || final (1 byte: 0x00 or 0x01)``.
    """
    _check_position(dataset_id, version, index)
    return (
        CHUNK_AD_DOMAIN
        + dataset_id
        + struct.pack(">IQ", version, index)
        + (b"\x01" if final else b"\x00")
    )


class ChunkCipher:
    """Encrypts and decrypts the chunks of one dataset version.

    Use one ``ChunkCipher`` per (key, dataset, version), and encrypt each chunk
    index once: the nonce is derived from the index, so encrypting two different
    plaintexts at the same index under the same key would reuse a nonce.
    """

    __slots__ = ("_aead", "dataset_id", "version")

    def __init__(self, key: DataKey, dataset_id: bytes, version: int) -> None:
        _check_position(dataset_id, version, 0)
        self._aead = AESGCM(key.raw())
        self.dataset_id = dataset_id
        self.version = version

    def encrypt(self, index: int, final: bool, plaintext: bytes) -> bytes:
        """Return ``ciphertext || tag`` (``len(plaintext) + 16`` bytes) for chunk ``index``."""
        ad = chunk_associated_data(self.dataset_id, self.version, index, final)
        return self._aead.encrypt(chunk_nonce(index, final), plaintext, ad)

    def decrypt(self, index: int, final: bool, ciphertext: bytes) -> bytes:
        """Authenticate and decrypt chunk ``index``.

        Raises :class:`DecryptionError` if the chunk was altered, belongs to another
        position, version or dataset, its final flag is wrong, or the key is wrong.
        """
        ad = chunk_associated_data(self.dataset_id, self.version, index, final)
        if len(ciphertext) < TAG_SIZE:
            raise DecryptionError(f"chunk {index}: ciphertext shorter than the GCM tag")
        try:
            return self._aead.decrypt(chunk_nonce(index, final), ciphertext, ad)
        except InvalidTag:
            raise DecryptionError(
                f"chunk {index} of version {self.version} failed authentication: "
                "it was altered, is out of place, or the data key is wrong"
            ) from None
