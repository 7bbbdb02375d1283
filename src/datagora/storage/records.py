"""Private key/value records (Datum's model) on the ledger's KeyValueStore.

``put(key, value)`` encrypts ``value`` under a fresh data key wrapped for the owner
(``crypto.sealed``) and points ``SHA-256(key)`` in the owner's on-chain namespace at
the encrypted value's content hash:

- a small value (its record at most :data:`MAX_ON_CHAIN` bytes) goes on chain as a
  CiphertextStore record; the content hash is the SHA-256 of that record;
- a larger one goes through the storage pipeline to the storage nodes; the content
  hash is its manifest hash (the manifest carries the wrapped key).

Every version stays readable: ``history(key)`` comes from the KeySet / KeyRemoved
events, and ``get(key, version)`` fetches any of them. ``remove`` only clears the
pointer; earlier versions remain on chain and on the nodes. The small-record layout
(``datagora.kv.v1``) is in ``docs/formats.md``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount

from datagora.crypto.aead import DATASET_ID_SIZE, TAG_SIZE, ChunkCipher, DataKey
from datagora.crypto.sealed import (
    SEAL_OVERHEAD,
    WRAP_SCHEME,
    WrappedKey,
    unwrap_data_key,
    wrap_data_key,
)
from datagora.ledger import Ledger
from datagora.storage.client import StorageClient
from datagora.storage.errors import IntegrityError, RecordNotFound, StorageError
from datagora.storage.pipeline import DEFAULT_K, DEFAULT_N, EncodingParams

__all__ = ["KV_MAGIC", "MAX_ON_CHAIN", "KVStore", "KVVersion", "decode_record", "encode_record"]

KV_MAGIC: Final = b"DGKV\x01"
MAX_ON_CHAIN: Final = 16 * 1024
_SEALED_SIZE: Final = SEAL_OVERHEAD + 32
_HEADER_SIZE: Final = len(KV_MAGIC) + 32 + DATASET_ID_SIZE + 32 + _SEALED_SIZE
# Values are sealed as a one-chunk "dataset version" 0 named by a random value id.
_VALUE_VERSION: Final = 0


def key_hash(key: str) -> bytes:
    """The on-chain key: SHA-256 of the UTF-8 key string."""
    if not isinstance(key, str) or not key:
        raise StorageError("a record key is a non-empty string")
    return hashlib.sha256(key.encode("utf-8")).digest()


def encode_record(key: bytes, value: bytes, owner: X25519PrivateKey) -> bytes:
    """Encrypt ``value`` as a ``datagora.kv.v1`` record for ``owner`` under key hash ``key``.

    ``"DGKV" 0x01 || key_hash (32) || value_id (32) || recipient (32) || sealed key (80)
    || AES-256-GCM(value)`` with the chunk format of index 0, final, version 0.
    """
    data_key = DataKey.generate()
    value_id = os.urandom(DATASET_ID_SIZE)
    wrapped = wrap_data_key(data_key, owner.public_key(), value_id, _VALUE_VERSION)
    ciphertext = ChunkCipher(data_key, value_id, _VALUE_VERSION).encrypt(0, True, value)
    return KV_MAGIC + key + value_id + wrapped.recipient + wrapped.sealed + ciphertext


def decode_record(record: bytes, key: bytes, owner: X25519PrivateKey) -> bytes:
    """Open a record made by :func:`encode_record`; raises :class:`IntegrityError` if it
    is malformed or for another key, and ``DecryptionError`` if it fails to open."""
    if len(record) < _HEADER_SIZE + TAG_SIZE or not record.startswith(KV_MAGIC):
        raise IntegrityError("not a datagora.kv.v1 record")
    at = len(KV_MAGIC)
    if record[at : at + 32] != key:
        raise IntegrityError("the record was written for another key")
    value_id = record[at + 32 : at + 64]
    recipient = record[at + 64 : at + 96]
    sealed = record[at + 96 : _HEADER_SIZE]
    data_key = unwrap_data_key(
        WrappedKey(WRAP_SCHEME, recipient, sealed), owner, value_id, _VALUE_VERSION
    )
    return ChunkCipher(data_key, value_id, _VALUE_VERSION).decrypt(0, True, record[_HEADER_SIZE:])


@dataclass(frozen=True)
class KVVersion:
    """One version of a key: its content hash, or None where the key was removed."""

    version: int
    content_hash: bytes | None
    block_number: int
    tx_hash: str

    @property
    def removed(self) -> bool:
        """True for a removal."""
        return self.content_hash is None


class KVStore:
    """One account's private key/value records.

    ``client`` (storage nodes) is needed only for values too large for the chain;
    ``owner_key`` is the X25519 key values are wrapped for (and opened with).
    """

    def __init__(
        self,
        ledger: Ledger,
        account: LocalAccount,
        client: StorageClient | None,
        owner_key: X25519PrivateKey,
        k: int = DEFAULT_K,
        n: int = DEFAULT_N,
    ) -> None:
        self.ledger = ledger
        self.account = account
        self.client = client
        self.owner_key = owner_key
        self.k = k
        self.n = n
        self._scanned = ledger.deployment.start_block - 1
        self._records: dict[bytes, bytes] = {}
        self._history: dict[bytes, list[KVVersion]] = {}

    @property
    def owner(self) -> str:
        """The account address whose namespace this is."""
        return str(self.account.address)

    def put(self, key: str, value: bytes) -> int:
        """Store ``value`` (encrypted) under ``key``; returns the key's new version."""
        kh = key_hash(key)
        record = encode_record(kh, value, self.owner_key)
        if len(record) <= MAX_ON_CHAIN:
            stored = self.ledger.ciphertexts.store(self.account, record, 0, kh)
            content = stored.ciphertext_sha256
            self._records[content] = record
        else:
            content = self._upload(value)
        version, _ = self.ledger.kv.set(self.account, kh, content)
        return version

    def _upload(self, value: bytes) -> bytes:
        if self.client is None:
            raise StorageError(
                f"a value of {len(value)} bytes is too large for an on-chain record "
                f"(at most {MAX_ON_CHAIN} bytes encrypted): configure storage nodes"
            )
        data_key = DataKey.generate()
        params = EncodingParams(os.urandom(DATASET_ID_SIZE), _VALUE_VERSION, k=self.k, n=self.n)
        result = self.client.upload(
            io.BytesIO(value), params, data_key, self.owner_key.public_key()
        )
        return result.manifest_hash

    def remove(self, key: str) -> int:
        """Clear ``key`` (its history stays readable); returns the new version."""
        kh = key_hash(key)
        if not self.ledger.kv.get(self.owner, kh).exists:
            raise RecordNotFound(f"no record {key!r} to remove")
        version, _ = self.ledger.kv.remove(self.account, kh)
        return version

    def get(self, key: str, version: int | None = None) -> bytes:
        """The value of ``key`` now, or at ``version``. Raises :class:`RecordNotFound`."""
        kh = key_hash(key)
        if version is None:
            current = self.ledger.kv.get(self.owner, kh)
            if not current.exists:
                raise RecordNotFound(f"no record {key!r}")
            return self._fetch(kh, current.content_hash)
        for entry in self.history(key):
            if entry.version == version:
                if entry.content_hash is None:
                    raise RecordNotFound(f"record {key!r} was removed at version {version}")
                return self._fetch(kh, entry.content_hash)
        raise RecordNotFound(f"record {key!r} has no version {version}")

    def history(self, key: str) -> list[KVVersion]:
        """Every version of ``key`` (sets and removals), oldest first."""
        self._scan()
        return list(self._history.get(key_hash(key), []))

    def _scan(self) -> None:
        """Read the events since the last scan (this owner's keys and records)."""
        head = self.ledger.chain.block_number
        if head <= self._scanned:
            return
        for event in self.ledger.events(self._scanned + 1, head):
            if event.name == "RecordStored" and event["writer"] == self.owner:
                self._records[bytes(event["ciphertext_sha256"])] = bytes(event["ciphertext"])
            elif event.name in ("KeySet", "KeyRemoved") and event["owner"] == self.owner:
                content = bytes(event["content_hash"]) if event.name == "KeySet" else None
                self._history.setdefault(bytes(event["key"]), []).append(
                    KVVersion(int(event["version"]), content, event.block_number, event.tx_hash)
                )
        self._scanned = head

    def _fetch(self, kh: bytes, content: bytes) -> bytes:
        if content not in self._records:
            self._scan()
        record = self._records.get(content)
        if record is not None:
            if hashlib.sha256(record).digest() != content:
                raise IntegrityError("an on-chain record does not match its content hash")
            return decode_record(record, kh, self.owner_key)
        if self.client is None:
            raise StorageError("this value is on the storage nodes: configure storage nodes")
        with tempfile.TemporaryDirectory(prefix="datagora-kv-") as tmp:
            target = Path(tmp) / "value"
            self.client.download(content, self.owner_key, target)
            return target.read_bytes()
