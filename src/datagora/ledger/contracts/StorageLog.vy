# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title StorageLog
@notice Repairs of a dataset's storage, on the record: the dataset's controller
        (the holder of its data NFT, or an operator it approved for all its
        tokens) records the manifest, the new placement record's hash and how
        many shares were rebuilt. Rebuilding needs no key, but only the
        controller's record counts: anyone else could claim repairs that never
        happened. Anyone can check the claim: the placement record is
        content-addressed on the nodes.
"""

interface IDataNFT:
    def manifest_hash(dataset: uint256) -> bytes32: view
    def controller(dataset: uint256) -> address: view
    def isApprovedForAll(owner: address, operator: address) -> bool: view


DATA_NFT: public(immutable(address))


event StorageRepaired:
    dataset: indexed(uint256)
    repairer: indexed(address)
    manifest_hash: bytes32
    placement_hash: bytes32
    shares_rebuilt: uint256


@deploy
def __init__(data_nft: address):
    DATA_NFT = data_nft


@external
def record_repair(dataset: uint256, manifest_hash: bytes32, placement_hash: bytes32, shares_rebuilt: uint256):
    """
    @notice Record a repair of the dataset's current version (its controller only).
    """
    assert manifest_hash != empty(bytes32), "datagora: empty manifest hash"
    assert staticcall IDataNFT(DATA_NFT).manifest_hash(dataset) == manifest_hash, "datagora: not the dataset's current manifest"
    assert placement_hash != empty(bytes32), "datagora: empty placement hash"
    assert shares_rebuilt != 0, "datagora: zero shares rebuilt"
    holder: address = staticcall IDataNFT(DATA_NFT).controller(dataset)
    assert msg.sender == holder or staticcall IDataNFT(DATA_NFT).isApprovedForAll(holder, msg.sender), "datagora: not controller"
    log StorageRepaired(dataset=dataset, repairer=msg.sender, manifest_hash=manifest_hash, placement_hash=placement_hash, shares_rebuilt=shares_rebuilt)
