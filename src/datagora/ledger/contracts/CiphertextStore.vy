# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title CiphertextStore
@notice Small records that live on chain as opaque ciphertext (BigchainDB's
        on-chain option): at most 24 KiB, carried in calldata and an event; only
        its SHA-256 and writer are kept in storage. A record is tied to a dataset
        (then only its controller may write) or to a key of the writer's own.
"""

interface IDataNFT:
    def controller(dataset: uint256) -> address: view


MAX_CIPHERTEXT: public(constant(uint256)) = 24_576

DATA_NFT: public(immutable(address))

record_count: public(uint256)
record_hash: public(HashMap[uint256, bytes32])
record_writer: public(HashMap[uint256, address])


event RecordStored:
    record_id: indexed(uint256)
    writer: indexed(address)
    dataset: indexed(uint256)
    key: bytes32
    ciphertext_sha256: bytes32
    ciphertext: Bytes[MAX_CIPHERTEXT]


@deploy
def __init__(data_nft: address):
    DATA_NFT = data_nft


@external
def store(dataset: uint256, key: bytes32, ciphertext: Bytes[MAX_CIPHERTEXT]) -> uint256:
    """
    @notice Store `ciphertext` on chain, for `dataset` (0: none) under `key`.
    @return The record id.
    """
    assert len(ciphertext) != 0, "datagora: empty ciphertext"
    if dataset != 0:
        assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(dataset), "datagora: not controller"
    record_id: uint256 = self.record_count + 1
    self.record_count = record_id
    digest: bytes32 = sha256(ciphertext)
    self.record_hash[record_id] = digest
    self.record_writer[record_id] = msg.sender
    log RecordStored(record_id=record_id, writer=msg.sender, dataset=dataset, key=key, ciphertext_sha256=digest, ciphertext=ciphertext)
    return record_id
