# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title AccessLog
@notice Proxies anchor the digest of their append-only access logs here, so
        "who was given access when" is verifiable, not just claimed: anyone
        holding a proxy's log can recompute its hash chain and compare it with
        the anchors. Each proxy has its own sequence; an anchor must extend the
        previous one (more entries than before).
"""

struct Anchor:
    digest: bytes32
    entries: uint256
    block_number: uint256


latest: public(HashMap[address, Anchor])
anchor_count: public(HashMap[address, uint256])


event AccessLogAnchored:
    proxy: indexed(address)
    sequence: indexed(uint256)
    digest: bytes32
    entries: uint256


@external
def anchor(digest: bytes32, entries: uint256) -> uint256:
    """
    @notice Record that the caller's access log, after `entries` entries, hashes to `digest`.
    @return The anchor's sequence number for this proxy.
    """
    assert digest != empty(bytes32), "datagora: empty digest"
    assert entries > self.latest[msg.sender].entries, "datagora: log must grow between anchors"
    sequence: uint256 = self.anchor_count[msg.sender] + 1
    self.anchor_count[msg.sender] = sequence
    self.latest[msg.sender] = Anchor(digest=digest, entries=entries, block_number=block.number)
    log AccessLogAnchored(proxy=msg.sender, sequence=sequence, digest=digest, entries=entries)
    return sequence
