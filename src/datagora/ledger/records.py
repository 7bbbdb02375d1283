"""Typed wrappers of the key/value records and the on-chain ciphertext records."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ContractWrapper, Tx, check_bytes32
from datagora.ledger.errors import InvalidArgument, LimitExceeded
from datagora.ledger.events import Event, decode_log

MAX_CIPHERTEXT = 24_576


@dataclass(frozen=True)
class KeyRecord:
    """The current state of one key: its content hash (zero when removed) and version."""

    owner: str
    key: bytes
    content_hash: bytes
    version: int

    @property
    def exists(self) -> bool:
        return self.content_hash != bytes(32)


class KeyValueStore(ContractWrapper):
    """Owner-namespaced keys, each mapping to the hash of its latest value."""

    contract_name = "KeyValueStore"

    def set(self, account: LocalAccount, key: bytes, content_hash: bytes) -> tuple[int, Tx]:
        """Point `key` (32 bytes) at `content_hash`; returns the new version."""
        check_bytes32(key, "key")
        check_bytes32(content_hash, "content hash")
        receipt = self._transact(account, "set", key, content_hash)
        (ev,) = self._decode(receipt, "KeySet")
        return int(ev["version"]), Tx.of(receipt)

    def remove(self, account: LocalAccount, key: bytes) -> tuple[int, Tx]:
        check_bytes32(key, "key")
        receipt = self._transact(account, "remove", key)
        (ev,) = self._decode(receipt, "KeyRemoved")
        return int(ev["version"]), Tx.of(receipt)

    def get(self, owner: str, key: bytes) -> KeyRecord:
        check_bytes32(key, "key")
        content_hash, version = self._view("get", owner, key)
        return KeyRecord(owner, key, bytes(content_hash), int(version))

    def events_of(self, owner: str, start: int, end: int) -> list[Event]:
        """The ``KeySet`` and ``KeyRemoved`` events of `owner`'s keys in blocks
        `start`..`end`, in chain order."""
        handlers = {}
        for name in ("KeySet", "KeyRemoved"):
            handler = self._contract.events[name]()
            handlers[bytes.fromhex(handler.topic.removeprefix("0x"))] = handler
        owner_topic = "0x" + bytes.fromhex(owner[2:]).rjust(32, b"\0").hex()
        return [
            decode_log(handlers[log.topics[0]], log, self.contract_name)
            for log in self.chain.get_logs([self.address], [None, owner_topic], start, end)
            if log.topics and log.topics[0] in handlers
        ]


@dataclass(frozen=True)
class CiphertextRecord:
    record_id: int
    writer: str
    ciphertext_sha256: bytes
    tx: Tx


class CiphertextStore(ContractWrapper):
    """Ciphertext of at most 24 KiB kept on chain (calldata + event)."""

    contract_name = "CiphertextStore"

    def store(
        self, account: LocalAccount, ciphertext: bytes, dataset: int = 0, key: bytes = bytes(32)
    ) -> CiphertextRecord:
        """Store `ciphertext` for `dataset` (0: none) under `key`; it must already be encrypted."""
        check_bytes32(key, "key")
        if not ciphertext:
            raise InvalidArgument("empty ciphertext", "the ciphertext is empty")
        if len(ciphertext) > MAX_CIPHERTEXT:
            raise LimitExceeded(
                "ciphertext too large",
                f"on-chain records hold at most {MAX_CIPHERTEXT} bytes, got {len(ciphertext)}: "
                "store it through the storage nodes instead",
            )
        receipt = self._transact(account, "store", dataset, key, ciphertext)
        (ev,) = self._decode(receipt, "RecordStored")
        return CiphertextRecord(
            int(ev["record_id"]), str(ev["writer"]), bytes(ev["ciphertext_sha256"]), Tx.of(receipt)
        )

    def record_hash(self, record_id: int) -> bytes:
        return bytes(self._view("record_hash", record_id))

    def record_count(self) -> int:
        return int(self._view("record_count"))


class MerkleVerifier(ContractWrapper):
    """On-chain verification of share inclusion proofs (RFC 6962 / RFC 9162)."""

    contract_name = "MerkleVerifier"

    def verify(
        self, share_hash: bytes, leaf_index: int, tree_size: int, path: list[bytes], root: bytes
    ) -> bool:
        """True if `share_hash` is leaf `leaf_index` of the tree with head `root`."""
        check_bytes32(share_hash, "share hash")
        check_bytes32(root, "root")
        return bool(self._view("verify", share_hash, leaf_index, tree_size, list(path), root))

    def verify_for_dataset(
        self, dataset: int, share_hash: bytes, leaf_index: int, tree_size: int, path: list[bytes]
    ) -> bool:
        """As :meth:`verify`, against the root the DataNFT records for `dataset`."""
        check_bytes32(share_hash, "share hash")
        return bool(
            self._view("verify_for_dataset", dataset, share_hash, leaf_index, tree_size, list(path))
        )


class StorageLog(ContractWrapper):
    """Storage repairs on the record."""

    contract_name = "StorageLog"

    def record_repair(
        self,
        account: LocalAccount,
        dataset: int,
        manifest_hash: bytes,
        placement_hash: bytes,
        shares_rebuilt: int,
    ) -> Tx:
        """Record a repair of `dataset`'s current version. Only its controller (the
        data NFT's holder or an operator it approved) may: anyone else is refused
        with :class:`~datagora.ledger.errors.NotController`, by the contract too."""
        check_bytes32(manifest_hash, "manifest hash")
        check_bytes32(placement_hash, "placement hash")
        return Tx.of(
            self._transact(
                account, "record_repair", dataset, manifest_hash, placement_hash, shares_rebuilt
            )
        )
