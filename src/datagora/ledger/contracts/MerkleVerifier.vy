# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title MerkleVerifier
@notice Verifies, on chain, that a share belongs to a dataset: RFC 6962 Merkle
        trees (leaf = SHA-256(0x00 || share SHA-256), node = SHA-256(0x01 ||
        left || right)) with inclusion proofs checked by the algorithm of
        RFC 9162 section 2.1.3.2 — the same as `datagora.storage.merkle`.
        Storage proofs and audits use it against the root the DataNFT records.
"""

interface IDataNFT:
    def merkle_root(dataset: uint256) -> bytes32: view


MAX_DEPTH: constant(uint256) = 64

DATA_NFT: public(immutable(address))


@deploy
def __init__(data_nft: address):
    DATA_NFT = data_nft


@internal
@pure
def _verify(share_hash: bytes32, leaf_index: uint256, tree_size: uint256, path: DynArray[bytes32, MAX_DEPTH], root: bytes32) -> bool:
    if leaf_index >= tree_size:
        return False
    fn: uint256 = leaf_index
    sn: uint256 = tree_size - 1
    r: bytes32 = sha256(concat(b"\x00", share_hash))
    for p: bytes32 in path:
        if sn == 0:
            return False
        if fn & 1 == 1 or fn == sn:
            r = sha256(concat(b"\x01", p, r))
            # Skip the levels where this node was promoted without a sibling.
            for _: uint256 in range(256):
                if fn & 1 == 1 or fn == 0:
                    break
                fn = fn >> 1
                sn = sn >> 1
        else:
            r = sha256(concat(b"\x01", r, p))
        fn = fn >> 1
        sn = sn >> 1
    return sn == 0 and r == root


@external
@pure
def verify(share_hash: bytes32, leaf_index: uint256, tree_size: uint256, path: DynArray[bytes32, MAX_DEPTH], root: bytes32) -> bool:
    """
    @notice True if `share_hash` is leaf `leaf_index` of the tree of
            `tree_size` leaves with head `root`, by audit path `path`.
    """
    return self._verify(share_hash, leaf_index, tree_size, path, root)


@external
@view
def verify_for_dataset(dataset: uint256, share_hash: bytes32, leaf_index: uint256, tree_size: uint256, path: DynArray[bytes32, MAX_DEPTH]) -> bool:
    """
    @notice As `verify`, against the Merkle root the DataNFT records for `dataset`.
    """
    root: bytes32 = staticcall IDataNFT(DATA_NFT).merkle_root(dataset)
    if root == empty(bytes32):
        return False
    return self._verify(share_hash, leaf_index, tree_size, path, root)
