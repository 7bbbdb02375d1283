"""The crypto layer: chunk AEAD and sealed key wrap (exported here); keys, proxy
re-encryption, the EIP-712 codec of signed requests and nonce stores in their modules.

The primitives come from maintained packages (``cryptography``, ``umbral-pre``,
``coincurve``, ``safe-pysha3``); none is hand-written. Key material is kept out of
``repr`` and exception messages.
"""

from datagora.crypto.aead import ChunkCipher, DataKey
from datagora.crypto.errors import CryptoError, DecryptionError
from datagora.crypto.sealed import (
    WrappedKey,
    open_sealed,
    public_key_bytes,
    public_key_from_bytes,
    seal,
    unwrap_data_key,
    wrap_data_key,
)

__all__ = [
    "ChunkCipher",
    "CryptoError",
    "DataKey",
    "DecryptionError",
    "WrappedKey",
    "open_sealed",
    "public_key_bytes",
    "public_key_from_bytes",
    "seal",
    "unwrap_data_key",
    "wrap_data_key",
]
