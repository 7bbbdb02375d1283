"""Publishing and consuming datasets end to end: storage, sharing, ledger and catalog.

Publishing encrypts and erasure-codes the file onto the storage nodes, wraps its
data key with Umbral to the owner's delegating key for this dataset version,
stores the public metadata (on the storage nodes, and in the catalog if there is
one) and publishes everything on chain in one transaction. Downloading checks
the chain, fetches and verifies the manifest, obtains the data key from the
proxies (or, for the owner, unwraps it), and fetches and verifies the shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datagora.catalog.resolver import MetadataResolver, datagora_uri
from datagora.crypto import pre
from datagora.crypto.aead import DataKey
from datagora.crypto.errors import PreError
from datagora.crypto.keys import Identity, PublicIdentity
from datagora.errors import ConfigError, NotFoundError
from datagora.ledger import (
    DAY_SECONDS,
    DatasetInfo,
    Ledger,
    Order,
    Pricing,
    PublishParams,
    Tx,
)
from datagora.ledger.conditions import Condition
from datagora.ledger.errors import NotFound
from datagora.market.errors import NoSuchDataset
from datagora.storage.client import StorageClient
from datagora.storage.download import DownloadReport
from datagora.storage.metadata import (
    Metadata,
    MockData,
    PublisherKeys,
    build_metadata,
    parse_metadata,
)
from datagora.storage.pipeline import EncodingParams, new_dataset_id
from datagora.storage.records import KVStore
from datagora.storage.upload import UploadResult
from datagora.tls import verify_context

if TYPE_CHECKING:
    from datagora.sharing.answers import Evidence

Progress = Callable[[int, int], None]
MAX_MOCK_BYTES = 16 << 20
"""What storage nodes keep of a public document (``retention``'s limit)."""


HANDOVER_PREFIX = b"datagora.handover.v1"


def handover_key(dataset: int, recipient: str) -> bytes:
    """The CiphertextStore key under which a dataset's holder leaves its data key, wrapped
    to `recipient`'s account Umbral key, before transferring the dataset to it."""
    return hashlib.sha256(
        HANDOVER_PREFIX + dataset.to_bytes(32, "big") + bytes.fromhex(recipient[2:])
    ).digest()


@dataclass(frozen=True)
class Handover:
    """A dataset given to another account: the data key left for it, the NFT transfer."""

    dataset: int
    recipient: str
    key_record: int
    """The CiphertextStore record holding the data key wrapped to the recipient (0: the
    dataset stores no data)."""
    tx: Tx
    """The NFT transfer; the dataset now awaits the recipient's re-key."""


def record_key(identity: Identity) -> X25519PrivateKey:
    """The X25519 key an account's key/value values are wrapped for, derived from its
    Ethereum secret (HKDF-SHA256, info "datagora/kv/x25519/v1"): one backup restores it."""
    seed = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"datagora/kv/x25519/v1"
    ).derive(bytes(identity.account.key))
    return X25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True)
class Endpoints:
    """Where the network's services are."""

    storage: list[str]
    proxies: list[str] = field(default_factory=list)
    # 0: the default, 2 with more than one proxy (1 would let any one proxy open
    # the key alone), else 1. A threshold of 1 with several proxies is refused.
    threshold: int = 0
    catalog: str | None = None
    compute: str | None = None
    # Where a network runs a compute node per owner (the embedded one): the node that
    # computes on a dataset, and a hook run as an account publishes (starts its nodes).
    compute_router: Callable[[int], str] | None = field(default=None, compare=False)
    on_publish: Callable[[Identity], object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        from datagora.sharing.requests import check_threshold

        if self.threshold == 0:
            object.__setattr__(self, "threshold", 2 if len(self.proxies) > 1 else 1)
        if self.proxies:
            check_threshold(self.threshold, len(self.proxies), ConfigError)

    def compute_node(self, dataset: int) -> str | None:
        """The compute node that computes on `dataset`: the router's, else `compute`."""
        if self.compute_router is not None:
            return self.compute_router(dataset)
        return self.compute


@dataclass(frozen=True)
class PublishedDataset:
    dataset: int
    datatoken: str
    version: int
    metadata: Metadata
    metadata_hash: bytes
    manifest_hash: bytes
    merkle_root: bytes
    tx: Tx
    upload: UploadResult


def _how_to_get(meta: Metadata, dataset: int) -> str:
    """The next step to read `dataset`, from its download service: buy, order or request."""
    service = next((s for s in meta.services if s.type == "download"), meta.services[0])
    if service.policy == "approval":
        return f'ask the owner: `datagora request {dataset} --purpose "…"`'
    if service.price == "0":
        return f"take a free access: `datagora order {dataset}`"
    return f"buy access first: `datagora buy {dataset}`"


class Marketplace:
    """One account's view of a datagora network."""

    # Seconds a download waits for the owner's agent to delegate after an order.
    delegation_wait: float = 30.0
    # Where the evidence of a proxy's signed bad fragment is kept when a key fetch
    # meets one (`datagora proxies report FILE` files it); None keeps none.
    evidence_dir: Path | None = None

    def __init__(self, ledger: Ledger, endpoints: Endpoints, identity: Identity | None) -> None:
        self.ledger = ledger
        self.endpoints = endpoints
        self._identity = identity
        self.kept_evidence: list[Path] = []
        """The evidence files the last key fetch kept (see :attr:`evidence_dir`)."""

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            raise ConfigError("this needs an account: load one (datagora account …, --account)")
        return self._identity

    def storage(self) -> StorageClient:
        if not self.endpoints.storage:
            raise ConfigError("no storage nodes are configured for this network")
        # Writes are signed by this account (it needs a quota on the nodes); without
        # an account the client only reads.
        signer = self._identity.account if self._identity is not None else None
        return StorageClient(self.endpoints.storage, signer=signer)

    # -- publishing --------------------------------------------------------------------
    def publish(
        self,
        src: str | os.PathLike[str] | BinaryIO,
        metadata: Metadata | dict[str, Any],
        *,
        pricing: Pricing = Pricing.FIXED,
        price: int = 0,
        market_fee_bps: int = 0,
        market_fee_recipient: str | None = None,
        order_timeout: int = DAY_SECONDS,
        dispenser_max_per_address: int = 1,
        chunk_size: int = 1 << 20,
        k: int = 4,
        n: int = 6,
        progress: Progress | None = None,
        mock: bytes | None = None,
    ) -> PublishedDataset:
        """Encrypt, erasure-code and store `src`, then publish it on chain in one transaction.

        `metadata` without ``services`` gets one download service matching the
        pricing: `price` for a fixed price, free otherwise, and the approval policy
        when there is no price at all (``Pricing.NONE``: access only by grant).
        `mock` (the bytes of a public synthetic sample, e.g. the CSV of
        :func:`datagora.compute.mock.make_mock`) is stored in the clear with the
        metadata, which names it (``mock``: its URI and SHA-256).
        The chain opens the metadata's download service, or, for a dataset without
        one (compute-only), its first service: what the metadata offers is what the
        chain sells, and a compute-only dataset never sells a download.
        """
        if self.endpoints.on_publish is not None:
            self.endpoints.on_publish(self.identity)
        owner = self.identity
        if not isinstance(metadata, Metadata) and "services" not in metadata:
            policy = "approval" if pricing == Pricing.NONE else "automatic"
            listed = str(price) if pricing == Pricing.FIXED else "0"
            service = {"id": 0, "type": "download", "price": listed, "policy": policy}
            metadata = {**metadata, "services": [service]}
        meta = metadata if isinstance(metadata, Metadata) else build_metadata(dict(metadata))
        keys = PublisherKeys(
            umbral_public_key=owner.umbral_public_key.hex(), verifying_key=owner.verifying_key.hex()
        )
        meta = meta.model_copy(update={"publisher_keys": keys})
        storage = self.storage()
        if mock is not None:
            if len(mock) > MAX_MOCK_BYTES:
                raise ConfigError(f"mock data is limited to {MAX_MOCK_BYTES} bytes")
            mock_hash = storage.put_blob(bytes(mock), "mock data")
            mock_entry = MockData(uri=datagora_uri(mock_hash), sha256=mock_hash.hex())
            meta = meta.model_copy(update={"mock": mock_entry})
        meta = build_metadata(meta.model_dump(mode="json", exclude_none=True))  # re-validate
        downloads = [s for s in meta.services if s.type == "download"]
        opened = (downloads or meta.services)[0].id  # metadata has at least one service
        raw_meta = meta.to_bytes()
        # The data key is wrapped to the delegating key of this dataset version; the
        # token id is only known once mined, so it is predicted (see below if wrong).
        predicted = self.ledger.data_nft.dataset_count() + 1
        key = DataKey.generate()
        scope = pre.dataset_scope(predicted, 1)
        wrapped = pre.wrap_key(key.raw(), owner.delegating_public_key(scope), scope=scope)
        params = EncodingParams(new_dataset_id(), 1, chunk_size=chunk_size, k=k, n=n)
        upload = storage.upload(src, params, key, wrapped, progress)
        meta_hash = storage.put_blob(raw_meta, "metadata")
        self._push_metadata(raw_meta)
        published = self.ledger.factory.publish(
            owner.account,
            PublishParams(
                metadata_hash=meta_hash,
                metadata_uri=datagora_uri(meta_hash),
                manifest_hash=upload.manifest_hash,
                merkle_root=upload.root,
                order_timeout=order_timeout,
                service_id=opened,
                pricing=pricing,
                price=price if pricing == Pricing.FIXED else 0,
                market_fee_bps=market_fee_bps,
                market_fee_recipient=market_fee_recipient or "0x" + "00" * 20,
                dispenser_max_per_address=dispenser_max_per_address
                if pricing == Pricing.FREE
                else 0,
            ),
        )
        version = 1
        if published.dataset != predicted:
            # Someone published in between: wrap the key for the real id, as version 2.
            version = 2
            upload = self._rewrap(storage, upload, key, published.dataset, version)
            self.ledger.data_nft.update(
                owner.account,
                published.dataset,
                meta_hash,
                datagora_uri(meta_hash),
                upload.manifest_hash,
                upload.root,
            )
        return PublishedDataset(
            published.dataset,
            published.datatoken,
            version,
            meta,
            meta_hash,
            upload.manifest_hash,
            upload.root,
            published.tx,
            upload,
        )

    def update_metadata(self, dataset: int, metadata: Metadata | dict[str, Any]) -> Tx:
        """A new version with new metadata and the same data (its key wrapped for the new
        version, so consumers' delegations follow the version)."""
        owner = self.identity
        info = self.dataset_info(dataset)
        meta = metadata if isinstance(metadata, Metadata) else build_metadata(dict(metadata))
        meta = build_metadata(
            meta.model_copy(update={"publisher_keys": self._keys()}).model_dump(
                mode="json", exclude_none=True
            )
        )
        raw = meta.to_bytes()
        storage = self.storage()
        meta_hash = storage.put_blob(raw, "metadata")
        self._push_metadata(raw)
        manifest_hash, root = info.manifest_hash, info.merkle_root
        if manifest_hash != bytes(32):
            key, _ = self.data_key(dataset)
            verified = storage.fetch_manifest(manifest_hash)
            rewrapped = self._rewrap_verified(storage, verified, key, dataset, info.version + 1)
            manifest_hash, root = rewrapped.manifest_hash, rewrapped.root
        return self.ledger.data_nft.update(
            owner.account, dataset, meta_hash, datagora_uri(meta_hash), manifest_hash, root
        )

    def rotate(
        self,
        dataset: int,
        src: str | os.PathLike[str] | BinaryIO | None = None,
        progress: Progress | None = None,
    ) -> Tx:
        """Re-encrypt the dataset under a new data key as a new version, so that old
        delegations open nothing new. `src` is new content (default: the current
        content). What consumers already downloaded cannot be recalled."""
        owner = self.identity
        info = self.dataset_info(dataset)
        storage = self.storage()
        with tempfile.TemporaryDirectory() as tmp:
            if src is None:
                current = Path(tmp) / "current"
                self.download(dataset, current)
                src = current
            old = storage.fetch_manifest(info.manifest_hash).manifest
            version = info.version + 1
            key = DataKey.generate()
            scope = pre.dataset_scope(dataset, version)
            wrapped = pre.wrap_key(key.raw(), owner.delegating_public_key(scope), scope=scope)
            params = EncodingParams(
                old.dataset_id, old.version + 1, chunk_size=old.chunk_size, k=old.k, n=old.n
            )
            upload = storage.upload(src, params, key, wrapped, progress)
        return self.ledger.data_nft.update(
            owner.account,
            dataset,
            info.metadata_hash,
            info.metadata_uri,
            upload.manifest_hash,
            upload.root,
        )

    # -- giving a dataset to another account ---------------------------------------------

    def transfer_dataset(self, dataset: int, to: PublicIdentity) -> Handover:
        """As the holder: give `dataset` (its data NFT: control and future revenue) to
        `to`, whose public record (``datagora account export-public``) names the Umbral
        key the current data key is left for, on chain, wrapped (a CiphertextStore
        record only `to` can open). The dataset then awaits its re-key: it neither
        sells nor serves until `to` runs :meth:`rekey`. Compute operators and trusted
        algorithms end with the transfer; see ``docs/ledger.md`` for what carries over."""
        me = self.identity
        info = self.dataset_info(dataset)
        if info.controller != me.address:
            raise ConfigError(f"you do not hold dataset {dataset}: {info.controller} does")
        if to.address == me.address:
            raise ConfigError("you already hold this dataset")
        record = 0
        if info.manifest_hash != bytes(32):
            import json

            key, _ = self.data_key(dataset)
            wrapped = pre.wrap_key(key.raw(), to.umbral_public_key, scope=b"")
            stored = self.ledger.ciphertexts.store(
                me.account,
                json.dumps(wrapped.to_json(), sort_keys=True).encode(),
                dataset,
                handover_key(dataset, to.address),
            )
            record = stored.record_id
        tx = self.ledger.data_nft.transfer(me.account, dataset, to.address)
        return Handover(dataset, to.address, record, tx)

    def rekey(self, dataset: int) -> Tx:
        """As the new holder of a transferred dataset: open the data key its previous
        holder left for you, wrap it to your own key as a new version (new manifest,
        metadata naming your keys) and so end the wait: the dataset sells and serves
        again, delegated by your agent. Rotate afterwards (:meth:`rotate`) for a fresh
        data key the previous holder never knew."""
        import json

        from datagora.ledger import DatasetState

        me = self.identity
        info = self.dataset_info(dataset)
        if info.controller != me.address:
            raise ConfigError(f"you do not hold dataset {dataset}: {info.controller} does")
        if info.state != DatasetState.AWAITING_REKEY:
            raise ConfigError(
                f"dataset {dataset} is {info.state.name.lower()}, not awaiting re-key"
            )
        if info.manifest_hash == bytes(32):
            raise ConfigError(f"dataset {dataset} stores no data: publish a version to re-key it")
        start = self.ledger.deployment.start_block
        moves = self.ledger.data_nft.find_events("DatasetTransferred", dataset, start=start)
        previous = moves[-1]["previous"] if moves else None
        wanted = handover_key(dataset, me.address)
        found = None
        for event in self.ledger.ciphertexts.find_events(
            "RecordStored", None, None, dataset, start=start
        ):
            if bytes(event["key"]) == wanted:
                found = (event["writer"], bytes(event["ciphertext"]))
        if found is None or found[0] != previous:
            raise ConfigError(
                f"the previous holder of dataset {dataset} left no data key for you: ask them "
                "to hand it over (datagora transfer-dataset), or publish the data again"
            )
        try:
            wrapped = pre.WrappedKey.from_json(json.loads(found[1]))
            key = DataKey(pre.unwrap_own(me, wrapped))
        except (ValueError, PreError) as exc:
            raise ConfigError(f"the data key left for you cannot be opened: {exc}") from None
        if self.endpoints.on_publish is not None:
            self.endpoints.on_publish(me)  # your agent delegates from now on
        meta = build_metadata(
            self.metadata(dataset)
            .model_copy(update={"publisher_keys": self._keys()})
            .model_dump(mode="json", exclude_none=True)
        )
        raw = meta.to_bytes()
        storage = self.storage()
        meta_hash = storage.put_blob(raw, "metadata")
        self._push_metadata(raw)
        verified = storage.fetch_manifest(info.manifest_hash)
        rewrapped = self._rewrap_verified(storage, verified, key, dataset, info.version + 1)
        return self.ledger.data_nft.update(
            me.account,
            dataset,
            meta_hash,
            datagora_uri(meta_hash),
            rewrapped.manifest_hash,
            rewrapped.root,
        )

    def _keys(self) -> PublisherKeys:
        me = self.identity
        return PublisherKeys(
            umbral_public_key=me.umbral_public_key.hex(), verifying_key=me.verifying_key.hex()
        )

    def _rewrap_verified(
        self, storage: StorageClient, verified: Any, key: DataKey, dataset: int, version: int
    ) -> UploadResult:
        owner = self.identity
        scope = pre.dataset_scope(dataset, version)
        wrapped = pre.wrap_key(key.raw(), owner.delegating_public_key(scope), scope=scope)
        return storage.rewrap(verified, storage.fetch_placement(verified), wrapped)

    def _rewrap(
        self, storage: StorageClient, upload: UploadResult, key: DataKey, dataset: int, version: int
    ) -> UploadResult:
        owner = self.identity
        scope = pre.dataset_scope(dataset, version)
        wrapped = pre.wrap_key(key.raw(), owner.delegating_public_key(scope), scope=scope)
        verified = storage.fetch_manifest(upload.manifest_hash)
        return storage.rewrap(verified, upload.placement, wrapped)

    def _push_metadata(self, raw: bytes) -> None:
        if not self.endpoints.catalog:
            return
        url = f"{self.endpoints.catalog.rstrip('/')}/metadata/{hashlib.sha256(raw).hexdigest()}"
        # If this fails the catalog still finds it on the storage nodes (datagora:// URI).
        with contextlib.suppress(httpx.HTTPError):
            httpx.put(url, content=raw, timeout=10).raise_for_status()

    # -- consuming ---------------------------------------------------------------------
    def dataset_info(self, dataset: int) -> DatasetInfo:
        """The dataset's record on chain; :class:`NoSuchDataset` if there is none."""
        try:
            return self.ledger.data_nft.get_dataset(dataset)
        except NotFound:
            count = self.ledger.data_nft.dataset_count()
            held = f"its ids are 1 to {count}" if count else "it has no datasets yet"
            raise NoSuchDataset(
                f"there is no dataset {dataset} on this network ({held}): "
                "find one with `datagora search` (SDK: Market.search)"
            ) from None

    def buy_and_order(
        self,
        dataset: int,
        service_id: int = 0,
        max_price: int | None = None,
        min_expires_at: int | None = None,
    ) -> Order:
        """Buy one access and order it in one transaction (EIP-2612 permit).

        Two guards make the seller's terms the ones the buyer saw: `max_price`
        (default: the price now) and `min_expires_at` (default: the expiry the
        service's validity gives now). If the seller raises the price or shortens
        the validity before the purchase is mined, it reverts and nothing is paid.
        """
        me = self.identity
        self.dataset_info(dataset)  # no such dataset: say so, not "the zero address"
        token = self.ledger.datatoken(dataset)
        return self.ledger.exchange.buy_and_order(
            me.account,
            dataset,
            token,
            service_id,
            self.consumer_key(),
            max_price,
            min_expires_at=token.terms_floor(service_id)
            if min_expires_at is None
            else min_expires_at,
        )

    def order_free(
        self, dataset: int, service_id: int = 0, min_expires_at: int | None = None
    ) -> Order:
        """Take a free datatoken from the dispenser and order with it (the terms guard
        as in :meth:`buy_and_order`)."""
        me = self.identity
        self.dataset_info(dataset)
        return self.ledger.dispenser.dispense_and_order(
            me.account,
            dataset,
            self.ledger.datatoken(dataset),
            service_id,
            self.consumer_key(),
            min_expires_at,
        )

    def request_access(self, dataset: int, purpose: str) -> int:
        """File an on-chain request; returns its id."""
        me = self.identity
        self.dataset_info(dataset)
        request_id, _ = self.ledger.access.request(
            me.account, dataset, purpose, self.consumer_key()
        )
        return request_id

    def consumer_key(self) -> bytes:
        """The public key orders and requests carry: the account's wallet-derived
        consumer key on this chain (``docs/sharing.md``), which proxies re-encrypt to."""
        return self.identity.consumer_key(self.ledger.chain.chain_id).public_key

    def grant(self, request_id: int, expires_in: int = 30 * DAY_SECONDS) -> Tx:
        """Grant a request on chain and hand the consumer's key fragments to the proxies."""
        from datagora.sharing.agent import delegate

        owner = self.identity
        req = self.ledger.access.get_request(request_id)
        tx = self.ledger.access.grant(
            owner.account, request_id, self.ledger.chain.timestamp() + expires_in
        )
        key = self._requested_key(request_id)
        proxies, threshold = self.proxies_for(req.dataset)
        if proxies and key:
            delegate(
                self.ledger,
                owner,
                req.dataset,
                self.dataset_info(req.dataset).version,
                req.consumer,
                key,
                proxies,
                threshold,
                grant=request_id,
            )
        return tx

    def proxies_for(self, dataset: int) -> tuple[list[str], int]:
        """The proxies (endpoints) and threshold that serve `dataset`'s key: those its
        controller chose on chain (``ProxySets``), else this client's configured ones."""
        from datagora.sharing.directory import dataset_proxies

        chosen = dataset_proxies(self.ledger, dataset)
        if chosen is None:
            return list(self.endpoints.proxies), self.endpoints.threshold
        return chosen

    def set_proxies(self, dataset: int, proxies: Sequence[str], threshold: int) -> Tx:
        """Choose `dataset`'s proxies (accounts of active registered proxy nodes) and
        threshold on chain (the controller only); an empty list and 0 clear the choice."""
        if self.ledger.proxy_sets is None:
            raise ConfigError("this deployment has no ProxySets contract: redeploy")
        return self.ledger.proxy_sets.set_proxies(
            self.identity.account, dataset, proxies, threshold
        )

    def _requested_key(self, request_id: int) -> bytes:
        for event in self.ledger.events():
            if event.name == "AccessRequested" and int(event["request_id"]) == request_id:
                return bytes(event["consumer_key"])
        return b""

    def deny(self, request_id: int, reason: str) -> Tx:
        return self.ledger.access.deny(self.identity.account, request_id, reason)

    def revoke(self, request_id: int) -> Tx:
        return self.ledger.access.revoke(self.identity.account, request_id)

    def set_condition(
        self, dataset: int, condition: Condition | str | None, service_id: int = 0
    ) -> Tx:
        """Set the access condition proxies check for `dataset`'s service (a tree, or its
        text such as ``"order AND (erc20:0xTOKEN>=100 OR before:2027-01-01)"``; grammar
        in ``docs/ledger.md``), or clear it (None). A malformed condition raises
        :class:`InvalidArgument` and nothing is sent."""
        return self.ledger.access.set_condition(
            self.identity.account, dataset, service_id, condition
        )

    def condition(self, dataset: int, service_id: int = 0) -> Condition | None:
        """The access condition of `dataset`'s service, or None (the order/grant rule)."""
        self.dataset_info(dataset)
        return self.ledger.access.condition_of(dataset, service_id)

    def metadata(self, dataset: int) -> Metadata:
        """The dataset's metadata, fetched and checked against its on-chain hash."""
        return self._metadata_of(dataset, self.dataset_info(dataset))

    def _metadata_of(self, dataset: int, info: DatasetInfo) -> Metadata:
        # A client fetches for its own user: private addresses are theirs to use.
        raw = MetadataResolver(self.endpoints.storage, allow_private=True).resolve(
            info.metadata_uri, info.metadata_hash
        )
        if raw is None and self.endpoints.catalog:
            try:
                r = httpx.get(
                    f"{self.endpoints.catalog.rstrip('/')}/metadata/{info.metadata_hash.hex()}",
                    timeout=10,
                    verify=verify_context(),
                )
                raw = r.content if r.status_code == 200 else None
            except httpx.HTTPError:
                raw = None
        if raw is None:
            raise NotFoundError(f"the metadata of dataset {dataset} was not found on any node")
        return parse_metadata(raw, info.metadata_hash)

    def data_key(self, dataset: int) -> tuple[DataKey, bytes]:
        """The data key of the dataset's current version, and its manifest hash."""
        me = self.identity
        info = self.dataset_info(dataset)
        if info.manifest_hash == bytes(32):
            raise NotFoundError(f"dataset {dataset} has no stored data")
        verified = self.storage().fetch_manifest(info.manifest_hash)
        wrapped = verified.manifest.wrapped_key
        if not isinstance(wrapped, pre.WrappedKey):
            raise ConfigError("this version's key is sealed to its owner alone; it is not shared")
        if info.controller == me.address:
            return DataKey(pre.unwrap_own(me, wrapped)), info.manifest_hash
        from datagora.sharing.consumer import fetch_data_key_report
        from datagora.sharing.errors import ExpiredOrder, NoKeyFragment, NoOrder, SharingError

        meta = self._metadata_of(dataset, info)  # the same version's, read once
        if meta.publisher_keys is None:
            raise ConfigError(f"dataset {dataset}'s metadata names no publisher keys")
        owner_public = PublicIdentity(
            info.controller,
            bytes.fromhex(meta.publisher_keys.umbral_public_key),
            bytes.fromhex(meta.publisher_keys.verifying_key),
        )
        # Right after an order, the owner's agent may not have handed the proxies this
        # consumer's fragments yet: wait for it a little rather than fail.
        deadline = time.monotonic() + self.delegation_wait
        pause = 0.02
        proxies, threshold = self.proxies_for(dataset)
        while True:
            try:
                report = fetch_data_key_report(
                    self.ledger,
                    me,
                    owner_public,
                    wrapped,
                    dataset,
                    info.version,
                    proxies,
                    threshold,
                )
                self._keep_evidence(report.evidence.values())
                return DataKey(report.data_key), info.manifest_hash
            except (NoOrder, ExpiredOrder) as exc:
                raise type(exc)(f"{exc}; {_how_to_get(meta, dataset)}") from None
            except NoKeyFragment:
                if time.monotonic() >= deadline:
                    raise
            except SharingError as exc:
                self._keep_evidence(exc.evidence.values())
                if not self.kept_evidence:
                    raise
                files = ", ".join(str(f) for f in self.kept_evidence)
                told = type(exc)(
                    f"{exc}; the evidence of the proxies' signed bad fragments is kept in "
                    f"{files} (file it: datagora proxies report FILE)"
                )
                told.evidence = exc.evidence
                raise told from None
            # Not delegated yet. Ask again soon at first (the agent usually follows
            # within a block; a round costs each proxy a signature check and a read).
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def _keep_evidence(self, evidence: Iterable[Evidence]) -> None:
        """Save each proxy's signed bad answer to :attr:`evidence_dir` (whether the key
        opened from the honest proxies or not); :attr:`kept_evidence` lists the files."""
        directory = self.evidence_dir
        self.kept_evidence = [e.save(directory) for e in evidence] if directory else []

    def download(
        self, dataset: int, dst: str | os.PathLike[str], progress: Progress | None = None
    ) -> DownloadReport:
        """Fetch, verify and decrypt the dataset's current version into `dst`."""
        key, manifest_hash = self.data_key(dataset)
        return self.storage().download(manifest_hash, key, dst, progress)

    def owner_download(
        self, manifest_hash: bytes, dst: str | os.PathLike[str], progress: Progress | None = None
    ) -> DownloadReport:
        """As the owner: fetch, verify and decrypt one stored version, named by its
        manifest hash, into `dst`; the owner's own identity unwraps its data key (the
        compute node reads the version a job was admitted on this way)."""
        storage = self.storage()
        wrapped = storage.fetch_manifest(manifest_hash).manifest.wrapped_key
        if not isinstance(wrapped, pre.WrappedKey):
            raise ConfigError("this version's key is not wrapped with Umbral to its owner")
        key = DataKey(pre.unwrap_own(self.identity, wrapped))
        return storage.download(manifest_hash, key, dst, progress)

    def records(self) -> KVStore:
        """This account's private key/value records (Datum's model): values encrypted
        to a key derived from the account's secret, key → hash on chain."""
        me = self.identity
        client = (
            StorageClient(self.endpoints.storage, signer=me.account)
            if self.endpoints.storage
            else None
        )
        return KVStore(self.ledger, me.account, client, record_key(me))

    def mock(self, dataset: int) -> bytes:
        """The dataset's public mock data (synthetic), checked against its hash."""
        meta = self.metadata(dataset)
        if meta.mock is None:
            raise NotFoundError(f"dataset {dataset} has no mock data")
        expected = bytes.fromhex(meta.mock.sha256)
        resolver = MetadataResolver(self.endpoints.storage, deadline=120.0, allow_private=True)
        raw = resolver.fetch(meta.mock.uri, expected, 64 << 20)
        if raw is None:
            raise NotFoundError(f"the mock data of dataset {dataset} was not found on any node")
        return raw

    def read_bytes(self, dataset: int) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data"
            self.download(dataset, path)
            return path.read_bytes()
