"""The crypto layer: chunk AEAD, sealed key wrap and Shamir secret sharing.

Everything here is real cryptography from the ``cryptography`` package (the Shamir
field arithmetic is the only hand-written part). Key material is kept out of
``repr`` and exception messages.
"""

from datagora.crypto.aead import ChunkCipher, CryptoError, DataKey, DecryptionError
from datagora.crypto.sealed import (
    WrappedKey,
    open_sealed,
    public_key_bytes,
    public_key_from_bytes,
    seal,
    unwrap_data_key,
    wrap_data_key,
)
from datagora.crypto.shamir import ShamirShare, combine_secret, split_secret

__all__ = [
    "ChunkCipher",
    "CryptoError",
    "DataKey",
    "DecryptionError",
    "ShamirShare",
    "WrappedKey",
    "combine_secret",
    "open_sealed",
    "public_key_bytes",
    "public_key_from_bytes",
    "seal",
    "split_secret",
    "unwrap_data_key",
    "wrap_data_key",
]
