# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title DataNFT
@notice One ERC-721 collection for every dataset: token id = dataset id, and
        whoever holds the token controls the dataset (its versions, state,
        prices, services, grants). Per dataset it records the SHA-256 of the
        metadata JSON, the metadata URI (served as the standard `tokenURI`), the
        manifest hash and Merkle root of the stored shares, a version number and
        a state. Only the Factory mints, so every token has its datatoken.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc721
from snekmate.tokens.interfaces import IERC4906

initializes: ownable
initializes: erc721[ownable := ownable]

exports: (
    erc721.owner,
    erc721.balanceOf,
    erc721.ownerOf,
    erc721.approve,
    erc721.getApproved,
    erc721.setApprovalForAll,
    erc721.isApprovedForAll,
    erc721.totalSupply,
    erc721.tokenByIndex,
    erc721.tokenOfOwnerByIndex,
    erc721.name,
    erc721.symbol,
    erc721.supportsInterface,
    erc721.nonces,
    erc721.permit,
    erc721.DOMAIN_SEPARATOR,
)

interface IAccessRegistry:
    def list_of(dataset: uint256, account: address) -> uint8: view


LIST_ALLOW: constant(uint8) = 1
LIST_DENY: constant(uint8) = 2

# Access-list flags, kept by the AccessRegistry in the dataset's `_info` slot so
# that a sale reads the registry only for datasets that have lists.
FLAG_DENY_LIST: constant(uint256) = 1
FLAG_ALLOW_ONLY: constant(uint256) = 2
FLAGS_SHIFT: constant(uint256) = 200

STATE_ACTIVE: constant(uint8) = 0
STATE_DISABLED: constant(uint8) = 1
STATE_RETIRED: constant(uint8) = 2
# Transferred: the data key is still wrapped to the previous holder. Nothing sells
# or is served until the new holder re-keys (an `update` with a new manifest).
STATE_REKEY: constant(uint8) = 3

# Transfers of a dataset's token so far (32 bits at EPOCH_SHIFT of `_info`): the
# ComputeRegistry ties operators and trusted algorithms to it, so they end with a transfer.
EPOCH_SHIFT: constant(uint256) = 208

# datatoken (160 bits) | version (32 bits) << 160 | state (8 bits) << 192 |
# access-list flags (8 bits) << 200 | transfers (32 bits) << 208: one storage
# slot instead of five keeps publishing and buying cheap.
_info: HashMap[uint256, uint256]
metadata_hash: public(HashMap[uint256, bytes32])
manifest_hash: public(HashMap[uint256, bytes32])
merkle_root: public(HashMap[uint256, bytes32])

factory: public(address)
access_registry: public(address)
# Where wallets fetch each token's ERC-721 metadata JSON (the catalog's `/nft/`):
# tokenURI(id) = base_uri ‖ id. Empty: the metadata URI recorded at publish.
base_uri: public(String[256])


struct DatasetInfo:
    controller: address
    datatoken: address
    version: uint32
    state: uint8
    metadata_hash: bytes32
    manifest_hash: bytes32
    merkle_root: bytes32
    metadata_uri: String[432]


event DatasetCreated:
    dataset: indexed(uint256)
    owner: indexed(address)
    datatoken: indexed(address)
    metadata_hash: bytes32
    manifest_hash: bytes32
    merkle_root: bytes32
    metadata_uri: String[432]


event DatasetUpdated:
    dataset: indexed(uint256)
    updater: indexed(address)
    version: uint32
    old_metadata_hash: bytes32
    new_metadata_hash: bytes32
    old_manifest_hash: bytes32
    new_manifest_hash: bytes32
    old_merkle_root: bytes32
    new_merkle_root: bytes32
    metadata_uri: String[432]


event DatasetStateChanged:
    dataset: indexed(uint256)
    updater: indexed(address)
    old_state: uint8
    new_state: uint8


event DatasetTransferred:
    dataset: indexed(uint256)
    previous: indexed(address)
    holder: indexed(address)
    epoch: uint256


event BaseURIChanged:
    base_uri: String[256]


event FactorySet:
    factory: indexed(address)


event AccessRegistrySet:
    access_registry: indexed(address)


@deploy
def __init__():
    ownable.__init__()
    erc721.__init__("datagora datasets", "DGDS", "", "datagora datasets", "1")
    # Token ids start at 1 so that 0 can mean "no dataset".
    erc721._counter = 1


@external
def set_factory(factory_: address):
    """
    @notice Wire the Factory, once. Only the collection owner (the deployer).
    """
    ownable._check_owner()
    assert self.factory == empty(address), "datagora: factory already set"
    assert factory_ != empty(address), "datagora: zero address"
    self.factory = factory_
    log FactorySet(factory=factory_)


@external
def set_access_registry(access_registry_: address):
    """
    @notice Wire the AccessRegistry, once. Only the collection owner (the deployer).
    """
    ownable._check_owner()
    assert self.access_registry == empty(address), "datagora: access registry already set"
    assert access_registry_ != empty(address), "datagora: zero address"
    self.access_registry = access_registry_
    log AccessRegistrySet(access_registry=access_registry_)


@external
def set_base_uri(base_uri_: String[256]):
    """
    @notice Point `tokenURI` at a catalog serving ERC-721 metadata JSON at
            `base_uri_` ‖ token id (e.g. "https://catalog.example/nft/"); empty
            returns to the recorded metadata URIs. Only the collection owner.
    """
    ownable._check_owner()
    self.base_uri = base_uri_
    # EIP-4906: every token's metadata moved.
    log IERC4906.BatchMetadataUpdate(_fromTokenId=1, _toTokenId=max(erc721._counter - 1, 1))
    log BaseURIChanged(base_uri=base_uri_)


@external
@view
def tokenURI(token_id: uint256) -> String[512]:
    """
    @notice ERC-721 metadata URI: the base URI ‖ the token id when one is set (a URL
            a wallet can fetch), else the metadata URI recorded for the dataset.
    """
    erc721._require_minted(token_id)
    base: String[256] = self.base_uri
    if len(base) != 0:
        return concat(base, uint2str(token_id))
    return erc721._token_uris[token_id]


@external
def set_list_flags(dataset: uint256, flags: uint256):
    """
    @notice Record whether `dataset` has a deny-list (1) and whether its sales
            are restricted to its allow-list (2). Only the AccessRegistry.
    """
    assert msg.sender == self.access_registry, "datagora: only the access registry"
    assert flags <= FLAG_DENY_LIST | FLAG_ALLOW_ONLY, "datagora: unknown flags"
    info: uint256 = self._info[dataset]
    assert info != 0, "datagora: no such dataset"
    self._info[dataset] = (info & ~(255 << FLAGS_SHIFT)) | (flags << FLAGS_SHIFT)


@external
def mint_dataset(
    owner_: address,
    datatoken: address,
    metadata_hash_: bytes32,
    metadata_uri: String[432],
    manifest_hash_: bytes32,
    merkle_root_: bytes32,
) -> uint256:
    """
    @notice Create a dataset: mint its token to `owner_` and record its hashes.
            Only the Factory, which creates the datatoken in the same transaction.
    """
    assert msg.sender == self.factory, "datagora: only the factory mints datasets"
    assert owner_ != empty(address), "datagora: zero address"
    assert metadata_hash_ != empty(bytes32), "datagora: empty metadata hash"
    dataset: uint256 = erc721._counter
    erc721._counter = dataset + 1
    erc721._mint(owner_, dataset)
    if len(metadata_uri) > 0:
        erc721._token_uris[dataset] = metadata_uri
    self._info[dataset] = convert(datatoken, uint256) | (1 << 160)
    self.metadata_hash[dataset] = metadata_hash_
    if manifest_hash_ != empty(bytes32):
        self.manifest_hash[dataset] = manifest_hash_
    if merkle_root_ != empty(bytes32):
        self.merkle_root[dataset] = merkle_root_
    log DatasetCreated(
        dataset=dataset,
        owner=owner_,
        datatoken=datatoken,
        metadata_hash=metadata_hash_,
        manifest_hash=manifest_hash_,
        merkle_root=merkle_root_,
        metadata_uri=metadata_uri,
    )
    return dataset


@internal
def _on_transfer(dataset: uint256, previous: address, holder: address):
    """A new holder: the dataset waits for its re-key (unless retired), and the roles
    tied to the old holder's epoch end."""
    if previous == holder:
        return
    info: uint256 = self._info[dataset]
    epoch: uint256 = ((info >> EPOCH_SHIFT) & 4294967295) + 1
    info = (info & ~(4294967295 << EPOCH_SHIFT)) | (epoch << EPOCH_SHIFT)
    old: uint8 = self._state(info)
    if old != STATE_RETIRED and old != STATE_REKEY:
        info = (info & ~(255 << 192)) | (convert(STATE_REKEY, uint256) << 192)
        log DatasetStateChanged(dataset=dataset, updater=previous, old_state=old, new_state=STATE_REKEY)
    self._info[dataset] = info
    log DatasetTransferred(dataset=dataset, previous=previous, holder=holder, epoch=epoch)


@external
@payable
def transferFrom(owner_: address, to: address, token_id: uint256):
    """
    @notice ERC-721 transfer. Moving a dataset's token moves control and future
            revenue, and puts the dataset in state 3 (awaiting re-key): it
            neither sells nor serves until the new holder makes a new version
            wrapped to its own key (`update` with a new manifest). Compute
            operators and trusted algorithms end with the transfer.
    """
    assert erc721._is_approved_or_owner(msg.sender, token_id), "erc721: caller is not token owner or approved"
    erc721._transfer(owner_, to, token_id)
    self._on_transfer(token_id, owner_, to)


@external
@payable
def safeTransferFrom(owner_: address, to: address, token_id: uint256, data: Bytes[1_024] = b""):
    """
    @notice ERC-721 safe transfer; as `transferFrom`.
    """
    assert erc721._is_approved_or_owner(msg.sender, token_id), "erc721: caller is not token owner or approved"
    # Effects before the receiver's hook (checks-effects-interactions).
    self._on_transfer(token_id, owner_, to)
    erc721._safe_transfer(owner_, to, token_id, data)


@internal
@view
def _check_controller(dataset: uint256):
    assert erc721._owner_of(dataset) == msg.sender, "datagora: not controller"


@internal
@view
def _state(info: uint256) -> uint8:
    return convert((info >> 192) & 255, uint8)


@external
def update(
    dataset: uint256,
    metadata_hash_: bytes32,
    metadata_uri: String[432],
    manifest_hash_: bytes32,
    merkle_root_: bytes32,
) -> uint32:
    """
    @notice Make a new version of `dataset`. Only its controller; not once retired.
            A zero `manifest_hash_` or `merkle_root_` keeps the current one, so
            a metadata-only update never erases the storage commitment.
    @return The new version number.
    """
    self._check_controller(dataset)
    assert metadata_hash_ != empty(bytes32), "datagora: empty metadata hash"
    info: uint256 = self._info[dataset]
    state: uint8 = self._state(info)
    assert state != STATE_RETIRED, "datagora: dataset retired"
    version: uint32 = convert((info >> 160) & 4294967295, uint32) + 1
    info = (info & ~(4294967295 << 160)) | (convert(version, uint256) << 160)
    old_metadata: bytes32 = self.metadata_hash[dataset]
    old_manifest: bytes32 = self.manifest_hash[dataset]
    old_root: bytes32 = self.merkle_root[dataset]
    if state == STATE_REKEY:
        # The re-key: a new version whose key is wrapped to the new holder has a new
        # manifest (and root). A metadata-only update cannot end the wait.
        assert manifest_hash_ != empty(bytes32) and manifest_hash_ != old_manifest, "datagora: re-key needs a new version wrapped to the new holder"
        assert merkle_root_ != empty(bytes32), "datagora: re-key needs a new version wrapped to the new holder"
        info = info & ~(255 << 192)
        log DatasetStateChanged(dataset=dataset, updater=msg.sender, old_state=STATE_REKEY, new_state=STATE_ACTIVE)
    self._info[dataset] = info
    new_manifest: bytes32 = manifest_hash_
    if new_manifest == empty(bytes32):
        new_manifest = old_manifest
    new_root: bytes32 = merkle_root_
    if new_root == empty(bytes32):
        new_root = old_root
    self.metadata_hash[dataset] = metadata_hash_
    self.manifest_hash[dataset] = new_manifest
    self.merkle_root[dataset] = new_root
    # Emits EIP-4906 MetadataUpdate(tokenId), which `supportsInterface` claims.
    erc721._set_token_uri(dataset, metadata_uri)
    log DatasetUpdated(
        dataset=dataset,
        updater=msg.sender,
        version=version,
        old_metadata_hash=old_metadata,
        new_metadata_hash=metadata_hash_,
        old_manifest_hash=old_manifest,
        new_manifest_hash=new_manifest,
        old_merkle_root=old_root,
        new_merkle_root=new_root,
        metadata_uri=metadata_uri,
    )
    return version


@external
def set_state(dataset: uint256, state: uint8):
    """
    @notice Activate, disable or retire `dataset`. Retiring is final.
    """
    self._check_controller(dataset)
    assert state <= STATE_RETIRED, "datagora: unknown state"
    info: uint256 = self._info[dataset]
    old: uint8 = self._state(info)
    assert old != STATE_RETIRED, "datagora: dataset retired"
    assert old != state, "datagora: state unchanged"
    # Awaiting re-key: only retiring; activating takes the re-key (`update`).
    assert old != STATE_REKEY or state == STATE_RETIRED, "datagora: re-key needs a new version wrapped to the new holder"
    self._info[dataset] = (info & ~(255 << 192)) | (convert(state, uint256) << 192)
    log DatasetStateChanged(dataset=dataset, updater=msg.sender, old_state=old, new_state=state)


@external
@view
def controller(dataset: uint256) -> address:
    """
    @notice The account that controls `dataset` (holder of its token).
    """
    return erc721._owner_of(dataset)


@external
@view
def controller_epoch(dataset: uint256) -> (address, uint256):
    """
    @notice The controller and how many times the dataset's token was transferred
            (roles granted in an earlier epoch end with the transfer).
    """
    return erc721._owner_of(dataset), (self._info[dataset] >> EPOCH_SHIFT) & 4294967295


@external
@view
def datatoken_of(dataset: uint256) -> address:
    return convert(self._info[dataset] & convert(max_value(uint160), uint256), address)


@external
@view
def version_of(dataset: uint256) -> uint32:
    return convert((self._info[dataset] >> 160) & 4294967295, uint32)


@external
@view
def state_of(dataset: uint256) -> uint8:
    return self._state(self._info[dataset])


@external
@view
def is_active(dataset: uint256) -> bool:
    info: uint256 = self._info[dataset]
    return info != 0 and self._state(info) == STATE_ACTIVE


@internal
@view
def _check_buyer(dataset: uint256, info: uint256, buyer: address, sale: bool):
    assert info != 0 and self._state(info) == STATE_ACTIVE, "datagora: dataset not active"
    flags: uint256 = (info >> FLAGS_SHIFT) & 255
    if flags != 0:
        kind: uint8 = staticcall IAccessRegistry(self.access_registry).list_of(dataset, buyer)
        assert kind != LIST_DENY, "datagora: consumer is deny-listed"
        if sale and flags & FLAG_ALLOW_ONLY != 0:
            assert kind == LIST_ALLOW, "datagora: sales are restricted to the allow-list"


@external
@view
def market_info(dataset: uint256, buyer: address) -> (address, address):
    """
    @notice Controller and datatoken, in one call (for the market contracts);
            reverts unless `dataset` is active and `buyer` may buy it: not
            deny-listed, and allow-listed if its sales are restricted. So every
            refusal happens before any token moves.
    """
    info: uint256 = self._info[dataset]
    self._check_buyer(dataset, info, buyer, True)
    return erc721._owner_of(dataset), convert(info & convert(max_value(uint160), uint256), address)


@external
@view
def may_use(dataset: uint256, consumer: address) -> bool:
    """
    @notice True if `dataset` serves `consumer` now: active and `consumer` not deny-listed.
    """
    info: uint256 = self._info[dataset]
    if info == 0 or self._state(info) != STATE_ACTIVE:
        return False
    if (info >> FLAGS_SHIFT) & 255 != 0:
        return staticcall IAccessRegistry(self.access_registry).list_of(dataset, consumer) != LIST_DENY
    return True


@external
@view
def list_flags(dataset: uint256) -> uint256:
    return (self._info[dataset] >> FLAGS_SHIFT) & 255


@external
@view
def dataset_count() -> uint256:
    return erc721._counter - 1


@external
@view
def get_dataset(dataset: uint256) -> DatasetInfo:
    """
    @notice Everything the chain holds about `dataset`; reverts if it does not exist.
    """
    info: uint256 = self._info[dataset]
    assert info != 0, "datagora: no such dataset"
    return DatasetInfo(
        controller=erc721._owner_of(dataset),
        datatoken=convert(info & convert(max_value(uint160), uint256), address),
        version=convert((info >> 160) & 4294967295, uint32),
        state=self._state(info),
        metadata_hash=self.metadata_hash[dataset],
        manifest_hash=self.manifest_hash[dataset],
        merkle_root=self.merkle_root[dataset],
        metadata_uri=erc721._token_uris[dataset],
    )
