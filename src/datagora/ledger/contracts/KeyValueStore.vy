# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title KeyValueStore
@notice Datum's key/value model: every account has its own namespace in which
        a 32-byte key maps to the content hash of its latest value and a version
        number. Anyone reads; only the namespace's owner writes. The history of
        a key is its events.
"""

# owner -> key -> content hash of the current value (zero: absent)
content_hash: public(HashMap[address, HashMap[bytes32, bytes32]])
# owner -> key -> number of writes so far (sets and removes)
version: public(HashMap[address, HashMap[bytes32, uint256]])


event KeySet:
    owner: indexed(address)
    key: indexed(bytes32)
    version: uint256
    content_hash: bytes32
    previous_hash: bytes32


event KeyRemoved:
    owner: indexed(address)
    key: indexed(bytes32)
    version: uint256
    previous_hash: bytes32


@external
def set(key: bytes32, content_hash_: bytes32) -> uint256:
    """
    @notice Point `key` in your namespace at `content_hash_`.
    @return The key's new version.
    """
    assert content_hash_ != empty(bytes32), "datagora: empty content hash"
    previous: bytes32 = self.content_hash[msg.sender][key]
    v: uint256 = self.version[msg.sender][key] + 1
    self.content_hash[msg.sender][key] = content_hash_
    self.version[msg.sender][key] = v
    log KeySet(owner=msg.sender, key=key, version=v, content_hash=content_hash_, previous_hash=previous)
    return v


@external
def remove(key: bytes32) -> uint256:
    """
    @notice Remove `key` from your namespace (its history stays in the events).
    """
    previous: bytes32 = self.content_hash[msg.sender][key]
    assert previous != empty(bytes32), "datagora: no such key"
    v: uint256 = self.version[msg.sender][key] + 1
    self.content_hash[msg.sender][key] = empty(bytes32)
    self.version[msg.sender][key] = v
    log KeyRemoved(owner=msg.sender, key=key, version=v, previous_hash=previous)
    return v


@external
@view
def get(owner: address, key: bytes32) -> (bytes32, uint256):
    return self.content_hash[owner][key], self.version[owner][key]
