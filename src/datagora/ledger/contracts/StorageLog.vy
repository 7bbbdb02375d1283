# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title StorageLog
@notice Repairs of a dataset's storage, on the record: the manifest, the new
        placement record's hash and how many shares were rebuilt. Rebuilding
        needs no key, but only parties who answer for it record it: the
        dataset's controller (the holder of its data NFT, or an operator it
        approved for all its tokens), or an active storage node of the
        NodeRegistry (staked, so a false claim can cost it). Anyone can check
        the claim: the placement record is content-addressed on the nodes.
"""

interface IDataNFT:
    def manifest_hash(dataset: uint256) -> bytes32: view
    def controller(dataset: uint256) -> address: view
    def isApprovedForAll(owner: address, operator: address) -> bool: view


interface INodeRegistry:
    def is_active(node: address, role: uint256) -> bool: view


ROLE_STORAGE: constant(uint256) = 1

DATA_NFT: public(immutable(address))
NODE_REGISTRY: public(immutable(address))


event StorageRepaired:
    dataset: indexed(uint256)
    repairer: indexed(address)
    manifest_hash: bytes32
    placement_hash: bytes32
    shares_rebuilt: uint256


@deploy
def __init__(data_nft: address, node_registry: address):
    assert data_nft != empty(address) and node_registry != empty(address), "datagora: zero address"
    DATA_NFT = data_nft
    NODE_REGISTRY = node_registry


@external
def record_repair(dataset: uint256, manifest_hash: bytes32, placement_hash: bytes32, shares_rebuilt: uint256):
    """
    @notice Record a repair of the dataset's current version (its controller or
            an active registered storage node only).
    """
    holder: address = staticcall IDataNFT(DATA_NFT).controller(dataset)
    assert msg.sender == holder or staticcall IDataNFT(DATA_NFT).isApprovedForAll(holder, msg.sender) or staticcall INodeRegistry(NODE_REGISTRY).is_active(msg.sender, ROLE_STORAGE), "datagora: not the controller or a registered storage node"
    assert manifest_hash != empty(bytes32), "datagora: empty manifest hash"
    assert staticcall IDataNFT(DATA_NFT).manifest_hash(dataset) == manifest_hash, "datagora: not the dataset's current manifest"
    assert placement_hash != empty(bytes32), "datagora: empty placement hash"
    assert shares_rebuilt != 0, "datagora: zero shares rebuilt"
    log StorageRepaired(dataset=dataset, repairer=msg.sender, manifest_hash=manifest_hash, placement_hash=placement_hash, shares_rebuilt=shares_rebuilt)
