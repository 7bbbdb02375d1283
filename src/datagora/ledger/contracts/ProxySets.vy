# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title ProxySets
@notice Which proxies re-encrypt a dataset's key, and how many of them a
        consumer needs: chosen on chain by the dataset's controller (the holder
        of its data NFT, or an operator it approved for all its tokens). Every
        proxy named must be active in the NodeRegistry with the proxy role when
        the set is chosen; a threshold of 1 is refused when there is more than
        one proxy (one proxy alone could then serve anyone). An empty list
        clears the choice (the owner's agent then uses its own proxies).
        Clients check again that each proxy is still active when they use it.
"""

interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def isApprovedForAll(owner: address, operator: address) -> bool: view


interface INodeRegistry:
    def is_active(node: address, role: uint256) -> bool: view


ROLE_PROXY: constant(uint256) = 2
MAX_PROXIES: constant(uint256) = 16

DATA_NFT: public(immutable(address))
NODE_REGISTRY: public(immutable(address))

_proxies: HashMap[uint256, DynArray[address, MAX_PROXIES]]
_threshold: HashMap[uint256, uint256]


event ProxiesSet:
    dataset: indexed(uint256)
    setter: indexed(address)
    proxies: DynArray[address, MAX_PROXIES]
    threshold: uint256


@deploy
def __init__(data_nft: address, node_registry: address):
    assert data_nft != empty(address) and node_registry != empty(address), "datagora: zero address"
    DATA_NFT = data_nft
    NODE_REGISTRY = node_registry


@external
def set_proxies(dataset: uint256, proxies: DynArray[address, MAX_PROXIES], threshold: uint256):
    """
    @notice Choose `dataset`'s proxies and threshold (its controller only); an
            empty list with threshold 0 clears the choice.
    """
    holder: address = staticcall IDataNFT(DATA_NFT).controller(dataset)
    assert msg.sender == holder or staticcall IDataNFT(DATA_NFT).isApprovedForAll(holder, msg.sender), "datagora: not controller"
    n: uint256 = len(proxies)
    if n == 0:
        assert threshold == 0, "datagora: no proxies, no threshold"
    else:
        assert threshold >= 1 and threshold <= n, "datagora: threshold out of range"
        assert n == 1 or threshold >= 2, "datagora: threshold 1 with several proxies"
    for i: uint256 in range(MAX_PROXIES):
        if i >= n:
            break
        p: address = proxies[i]
        assert staticcall INodeRegistry(NODE_REGISTRY).is_active(p, ROLE_PROXY), "datagora: not an active registered proxy"
        for j: uint256 in range(MAX_PROXIES):
            if j >= i:
                break
            assert proxies[j] != p, "datagora: proxy named twice"
    self._proxies[dataset] = proxies
    self._threshold[dataset] = threshold
    log ProxiesSet(dataset=dataset, setter=msg.sender, proxies=proxies, threshold=threshold)


@external
@view
def proxies_of(dataset: uint256) -> (DynArray[address, MAX_PROXIES], uint256):
    """
    @notice The dataset's chosen proxies and threshold (empty and 0: none chosen).
    """
    return self._proxies[dataset], self._threshold[dataset]
