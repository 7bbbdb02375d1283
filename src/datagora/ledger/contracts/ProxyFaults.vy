# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title ProxyFaults
@notice Reports of proxies that answered with a capsule fragment that does not
        verify, and the slashing of their NodeRegistry stake when the dataset's
        owner confirms one. This is arbitration, not proof: the contract checks
        that the proxy signed the fragment as its answer to the consumer's
        request (ecrecover over the answer digest, docs/sharing.md), and records
        the evidence in an event; it cannot run Umbral verification, so whether
        the fragment is bad is for the dataset's controller to judge (anyone can
        re-check the evidence off chain). The registry approves this contract
        as a slasher.
"""

interface IDataNFT:
    def controller(dataset: uint256) -> address: view


interface INodeRegistry:
    def nodes(node: address) -> (uint256, String[256], Bytes[33], uint256, uint8, uint256): view
    def slash(node: address, amount: uint256, to: address) -> uint256: nonpayable


ANSWER_TAG: constant(bytes32) = keccak256("datagora.cfrag-answer.v1")
ROLE_PROXY: constant(uint256) = 2
MAX_CFRAG: constant(uint256) = 512

DATA_NFT: public(immutable(address))
NODE_REGISTRY: public(immutable(address))


struct Report:
    proxy: address
    reporter: address
    dataset: uint256
    state: uint8  # 1 open, 2 confirmed, 3 dismissed


report_count: public(uint256)
reports: public(HashMap[uint256, Report])
# answer digest -> reported already (one report per signed answer)
reported: public(HashMap[bytes32, bool])


event FaultReported:
    report_id: indexed(uint256)
    proxy: indexed(address)
    dataset: indexed(uint256)
    reporter: address
    version: uint256
    request_digest: bytes32
    cfrag: Bytes[MAX_CFRAG]
    signature: Bytes[65]


event FaultConfirmed:
    report_id: indexed(uint256)
    proxy: indexed(address)
    slashed: uint256


event FaultDismissed:
    report_id: indexed(uint256)


@deploy
def __init__(data_nft: address, node_registry: address):
    assert data_nft != empty(address) and node_registry != empty(address), "datagora: zero address"
    DATA_NFT = data_nft
    NODE_REGISTRY = node_registry


@internal
@view
def _signer(digest: bytes32, signature: Bytes[65]) -> address:
    assert len(signature) == 65, "datagora: bad answer signature"
    r: uint256 = convert(slice(signature, 0, 32), uint256)
    s: uint256 = convert(slice(signature, 32, 32), uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    # Low s only (EIP-2): one signature per answer.
    assert s <= 57896044618658097711785492504343953926418782139537452191302581570759080747168, "datagora: bad answer signature"
    signer: address = ecrecover(digest, v, r, s)
    assert signer != empty(address), "datagora: bad answer signature"
    return signer


@external
def report(dataset: uint256, version: uint256, request_digest: bytes32, cfrag: Bytes[MAX_CFRAG], signature: Bytes[65]) -> uint256:
    """
    @notice Report the registered proxy that signed `cfrag` as its answer to the
            caller's request `request_digest` on `dataset` `version` (the caller is
            the consumer who asked). Returns the report id.
    """
    inner: bytes32 = keccak256(abi_encode(ANSWER_TAG, chain.id, self, dataset, version, msg.sender, request_digest, keccak256(cfrag)))
    digest: bytes32 = keccak256(concat(b"\x19Ethereum Signed Message:\n32", inner))
    proxy: address = self._signer(digest, signature)
    roles: uint256 = 0
    endpoint: String[256] = ""
    pk: Bytes[33] = b""
    stake: uint256 = 0
    state: uint8 = 0
    unbond_at: uint256 = 0
    roles, endpoint, pk, stake, state, unbond_at = staticcall INodeRegistry(NODE_REGISTRY).nodes(proxy)
    assert roles & ROLE_PROXY != 0, "datagora: not signed by a registered proxy"
    assert not self.reported[digest], "datagora: answer already reported"
    self.reported[digest] = True
    report_id: uint256 = self.report_count + 1
    self.report_count = report_id
    self.reports[report_id] = Report(proxy=proxy, reporter=msg.sender, dataset=dataset, state=1)
    log FaultReported(report_id=report_id, proxy=proxy, dataset=dataset, reporter=msg.sender, version=version, request_digest=request_digest, cfrag=cfrag, signature=signature)
    return report_id


@external
def confirm(report_id: uint256, amount: uint256) -> uint256:
    """
    @notice As the dataset's controller: the reported fragment does not verify;
            slash up to `amount` of the proxy's stake to the reporter.
    """
    rep: Report = self.reports[report_id]
    assert rep.state == 1, "datagora: no open report"
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(rep.dataset), "datagora: not controller"
    self.reports[report_id].state = 2
    slashed: uint256 = extcall INodeRegistry(NODE_REGISTRY).slash(rep.proxy, amount, rep.reporter)
    log FaultConfirmed(report_id=report_id, proxy=rep.proxy, slashed=slashed)
    return slashed


@external
def dismiss(report_id: uint256):
    """
    @notice As the dataset's controller: the reported fragment verifies.
    """
    rep: Report = self.reports[report_id]
    assert rep.state == 1, "datagora: no open report"
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(rep.dataset), "datagora: not controller"
    self.reports[report_id].state = 3
    log FaultDismissed(report_id=report_id)
