"""Typed wrappers of the DataNFT collection and the Factory that publishes datasets."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ZERO_ADDRESS, ContractWrapper, Tx, check_address, check_bytes32
from datagora.ledger.chain import Chain
from datagora.ledger.errors import InvalidArgument

EMPTY32 = bytes(32)
MAX_METADATA_URI = 432
DAY_SECONDS = DAY = 86_400


class DatasetState(enum.IntEnum):
    ACTIVE = 0
    DISABLED = 1
    RETIRED = 2


class Pricing(enum.IntEnum):
    NONE = 0
    FIXED = 1
    FREE = 2


@dataclass(frozen=True)
class DatasetInfo:
    """What the chain holds about one dataset."""

    dataset: int
    controller: str
    datatoken: str
    version: int
    state: DatasetState
    metadata_hash: bytes
    manifest_hash: bytes
    merkle_root: bytes
    metadata_uri: str


@dataclass(frozen=True)
class PublishParams:
    """Everything one publish transaction sets.

    `price` is in MarketToken base units per datatoken (with ``Pricing.FIXED``);
    `market_fee_bps` goes to `market_fee_recipient`; `dispenser_max_per_address`
    applies with ``Pricing.FREE``; service `service_id` (0: download, 1: compute) is
    the one service opened, with orders valid `order_timeout` seconds — publish with
    ``service_id=1`` for a compute-only dataset that never sells a download.
    """

    metadata_hash: bytes
    metadata_uri: str = ""
    manifest_hash: bytes = EMPTY32
    merkle_root: bytes = EMPTY32
    order_timeout: int = DAY
    service_id: int = 0
    pricing: Pricing = Pricing.NONE
    price: int = 0
    market_fee_bps: int = 0
    market_fee_recipient: str = ZERO_ADDRESS
    dispenser_max_per_address: int = 0

    def checked(self) -> tuple[object, ...]:
        """The ABI tuple, after the checks that give clearer errors than a revert."""
        check_bytes32(self.metadata_hash, "metadata hash")
        check_bytes32(self.manifest_hash, "manifest hash")
        check_bytes32(self.merkle_root, "Merkle root")
        if self.metadata_hash == EMPTY32:
            raise InvalidArgument("empty metadata hash", "the metadata hash must not be zero")
        if len(self.metadata_uri.encode()) > MAX_METADATA_URI:
            raise InvalidArgument(
                "metadata URI too long", f"metadata URI is limited to {MAX_METADATA_URI} bytes"
            )
        if self.order_timeout <= 0:
            raise InvalidArgument("zero order timeout", "order timeout must be positive")
        if self.service_id < 0:
            raise InvalidArgument("bad service id", "a service id is a non-negative integer")
        if self.pricing == Pricing.FIXED and self.price <= 0:
            raise InvalidArgument("zero price", "a fixed price must be positive")
        if self.pricing == Pricing.FREE and self.dispenser_max_per_address <= 0:
            raise InvalidArgument("zero amount", "the dispenser limit must be positive")
        return (
            self.metadata_hash,
            self.metadata_uri,
            self.manifest_hash,
            self.merkle_root,
            self.order_timeout,
            self.service_id,
            int(self.pricing),
            self.price,
            self.market_fee_bps,
            self.market_fee_recipient,
            self.dispenser_max_per_address,
        )


@dataclass(frozen=True)
class Published:
    """The result of a publish transaction."""

    dataset: int
    datatoken: str
    tx: Tx


class DataNFT(ContractWrapper):
    """The ERC-721 collection of datasets."""

    contract_name = "DataNFT"

    def dataset_count(self) -> int:
        return int(self._view("dataset_count"))

    def owner_of(self, dataset: int) -> str:
        return str(self._view("ownerOf", dataset))

    def controller(self, dataset: int) -> str:
        return str(self._view("controller", dataset))

    def datatoken_of(self, dataset: int) -> str:
        return str(self._view("datatoken_of", dataset))

    def is_active(self, dataset: int) -> bool:
        return bool(self._view("is_active", dataset))

    def may_use(self, dataset: int, consumer: str) -> bool:
        """Whether `dataset` serves `consumer` now: active, and `consumer` not deny-listed."""
        return bool(self._view("may_use", dataset, check_address(consumer, "consumer")))

    def list_flags(self, dataset: int) -> int:
        """1: the dataset has a deny-list; 2: its sales are restricted to its allow-list."""
        return int(self._view("list_flags", dataset))

    def token_uri(self, dataset: int) -> str:
        return str(self._view("tokenURI", dataset))

    def get_dataset(self, dataset: int) -> DatasetInfo:
        info = self._view("get_dataset", dataset)
        return DatasetInfo(
            dataset=dataset,
            controller=str(info[0]),
            datatoken=str(info[1]),
            version=int(info[2]),
            state=DatasetState(info[3]),
            metadata_hash=bytes(info[4]),
            manifest_hash=bytes(info[5]),
            merkle_root=bytes(info[6]),
            metadata_uri=str(info[7]),
        )

    def update(
        self,
        account: LocalAccount,
        dataset: int,
        metadata_hash: bytes,
        metadata_uri: str,
        manifest_hash: bytes = EMPTY32,
        merkle_root: bytes = EMPTY32,
    ) -> Tx:
        """Make a new version of `dataset` (its controller only).

        A zero `manifest_hash` or `merkle_root` (the default) keeps the current one:
        a metadata-only update never erases the storage commitment.
        """
        check_bytes32(metadata_hash, "metadata hash")
        check_bytes32(manifest_hash, "manifest hash")
        check_bytes32(merkle_root, "Merkle root")
        if len(metadata_uri.encode()) > MAX_METADATA_URI:
            raise InvalidArgument(
                "metadata URI too long", f"metadata URI is limited to {MAX_METADATA_URI} bytes"
            )
        return Tx.of(
            self._transact(
                account, "update", dataset, metadata_hash, metadata_uri, manifest_hash, merkle_root
            )
        )

    def set_state(self, account: LocalAccount, dataset: int, state: DatasetState) -> Tx:
        return Tx.of(self._transact(account, "set_state", dataset, int(state)))

    def transfer(self, account: LocalAccount, dataset: int, to: str) -> Tx:
        """Hand the dataset (and control of it) to `to`."""
        return Tx.of(
            self._transact(
                account, "transferFrom", account.address, check_address(to, "recipient"), dataset
            )
        )

    def set_operator(self, account: LocalAccount, operator: str, approved: bool) -> Tx:
        """Let `operator` act for `account` on all its datasets (ERC-721 approval for all)."""
        return Tx.of(
            self._transact(
                account, "setApprovalForAll", check_address(operator, "operator"), approved
            )
        )

    def is_operator(self, holder: str, operator: str) -> bool:
        """Whether `operator` may act for `holder` on all its datasets."""
        return bool(
            self._view(
                "isApprovedForAll",
                check_address(holder, "holder"),
                check_address(operator, "operator"),
            )
        )

    def may_control(self, dataset: int, account: str) -> bool:
        """Whether `account` controls `dataset`: its holder, or an operator it approved."""
        holder = self.controller(dataset)
        if int(holder, 16) == 0:
            return False
        return holder == check_address(account, "account") or self.is_operator(holder, account)


class Factory(ContractWrapper):
    """Publishes a dataset in one transaction."""

    contract_name = "Factory"

    def __init__(self, chain: Chain, address: str, data_nft: DataNFT) -> None:
        super().__init__(chain, address)
        self.data_nft = data_nft

    def publish(self, account: LocalAccount, params: PublishParams) -> Published:
        """Publish a dataset owned by `account`: NFT, datatoken, hashes and price at once."""
        receipt = self._transact(account, "publish", params.checked())
        (created,) = self.data_nft._decode(receipt, "DatasetCreated")
        return Published(int(created["dataset"]), str(created["datatoken"]), Tx.of(receipt))
