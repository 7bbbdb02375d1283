# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title Datatoken
@notice The template of every dataset's ERC-20 (snekmate, with EIP-2612
        permit); each dataset gets an EIP-1167 clone. Holding one datatoken
        (decimals 0) is the right to one order: `order` spends exactly one and
        records an expiry per consumer and service. Name and symbol are derived
        from the dataset id so that a clone needs a single storage slot.
"""

from ethereum.ercs import IERC20
from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: (
    erc20.transfer,
    erc20.approve,
    erc20.transferFrom,
    erc20.permit,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    erc20.balanceOf,
    erc20.allowance,
    erc20.totalSupply,
    erc20.nonces,
    erc20.decimals,
)


interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def market_info(dataset: uint256, buyer: address) -> (address, address): view
    def may_use(dataset: uint256, consumer: address) -> bool: view
    def factory() -> address: view


DATA_NFT: public(immutable(address))
EXCHANGE: public(immutable(address))
DISPENSER: public(immutable(address))

MAX_CONSUMER_KEY: constant(uint256) = 128

dataset: public(uint256)
# Seconds an order of a service stays valid; 0 means the service does not exist.
service_timeout: public(HashMap[uint256, uint256])
# consumer -> service id -> expiry (unix seconds) of that consumer's latest order.
order_expires_at: public(HashMap[address, HashMap[uint256, uint256]])


event OrderStarted:
    dataset: indexed(uint256)
    consumer: indexed(address)
    payer: indexed(address)
    service_id: uint256
    consumer_key: Bytes[MAX_CONSUMER_KEY]
    expires_at: uint256


event ServiceChanged:
    dataset: indexed(uint256)
    service_id: indexed(uint256)
    timeout: uint256


@deploy
def __init__(data_nft: address, exchange: address, dispenser: address):
    ownable.__init__()
    erc20.__init__("datagora datatoken", "DT", 0, "datagora datatoken", "1")
    DATA_NFT = data_nft
    EXCHANGE = exchange
    DISPENSER = dispenser
    # The template itself can never be initialised: only its clones are datatokens.
    self.dataset = max_value(uint256)


@external
def initialize(dataset_: uint256, service_id: uint256, timeout: uint256):
    """
    @notice Bind a fresh clone to its dataset. Only the Factory, once.
    """
    assert self.dataset == 0, "datagora: already initialised"
    assert msg.sender == staticcall IDataNFT(DATA_NFT).factory(), "datagora: only the factory"
    assert dataset_ != 0, "datagora: no such dataset"
    self.dataset = dataset_
    if timeout != 0:
        self.service_timeout[service_id] = timeout
        log ServiceChanged(dataset=dataset_, service_id=service_id, timeout=timeout)


@external
@view
def name() -> String[96]:
    return concat("datagora dataset #", uint2str(self.dataset))


@external
@view
def symbol() -> String[96]:
    return concat("DT", uint2str(self.dataset))


@internal
@view
def _controller() -> address:
    return staticcall IDataNFT(DATA_NFT).controller(self.dataset)


@external
def mint(to: address, amount: uint256):
    """
    @notice Mint datatokens. The dataset's controller may mint to anyone; the
            exchange and dispenser mint under their own price and limit rules.
    """
    assert msg.sender == EXCHANGE or msg.sender == DISPENSER or msg.sender == self._controller(), "datagora: not controller"
    assert amount != 0, "datagora: zero amount"
    erc20._mint(to, amount)


@external
def set_service(service_id: uint256, timeout: uint256):
    """
    @notice Offer service `service_id` with orders valid for `timeout` seconds
            (0 withdraws it). Only the dataset's controller.
    """
    assert msg.sender == self._controller(), "datagora: not controller"
    self.service_timeout[service_id] = timeout
    log ServiceChanged(dataset=self.dataset, service_id=service_id, timeout=timeout)


@internal
def _record_order(dataset_: uint256, consumer: address, payer: address, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256) -> uint256:
    assert consumer != empty(address), "datagora: zero address"
    timeout: uint256 = self.service_timeout[service_id]
    assert timeout != 0, "datagora: unknown service"
    expires_at: uint256 = block.timestamp + timeout
    # The terms guard, like the price guard: a timeout shortened after the buyer
    # looked (a seller front-running the purchase) reverts the whole payment.
    assert expires_at >= min_expires_at, "datagora: order terms changed"
    if expires_at > self.order_expires_at[consumer][service_id]:
        self.order_expires_at[consumer][service_id] = expires_at
    log OrderStarted(
        dataset=dataset_,
        consumer=consumer,
        payer=payer,
        service_id=service_id,
        consumer_key=consumer_key,
        expires_at=expires_at,
    )
    return expires_at


@internal
def _order(holder: address, consumer: address, payer: address, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256) -> uint256:
    dataset_: uint256 = self.dataset
    # Reverts unless the dataset is active and `consumer` may buy it (deny- and allow-lists).
    controller: address = empty(address)
    datatoken: address = empty(address)
    controller, datatoken = staticcall IDataNFT(DATA_NFT).market_info(dataset_, consumer)
    assert erc20.balanceOf[holder] != 0, "datagora: no datatoken"
    erc20._burn(holder, 1)
    return self._record_order(dataset_, consumer, payer, service_id, consumer_key, min_expires_at)


@external
def order(service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256) -> uint256:
    """
    @notice Spend one of your datatokens on service `service_id` for yourself.
            `consumer_key` is your public re-encryption key. Reverts if the
            order would expire before `min_expires_at` (the terms you saw).
    @return The order's expiry (unix seconds).
    """
    return self._order(msg.sender, msg.sender, msg.sender, service_id, consumer_key, min_expires_at)


@external
def order_for(consumer: address, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256) -> uint256:
    """
    @notice Spend one of your datatokens on an order for `consumer` (you pay).
    """
    return self._order(msg.sender, consumer, msg.sender, service_id, consumer_key, min_expires_at)


@external
def market_order(buyer: address, dataset_: uint256, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256) -> uint256:
    """
    @notice The exchange's and dispenser's one-transaction buy-and-order: one
            datatoken is minted to `buyer` and spent at once on an order by and
            for `buyer`. Both Transfer events are emitted, so any ERC-20 reader
            sees the mint and the spend; balances and supply end where they
            began, so no storage is written for them. The caller has already
            checked that the dataset is active, taken the payment, and found
            this datatoken as `dataset_`'s in the DataNFT (so `dataset_` is
            this clone's dataset and need not be read from storage).
    """
    assert msg.sender == EXCHANGE or msg.sender == DISPENSER, "datagora: only the market contracts"
    log IERC20.Transfer(sender=empty(address), receiver=buyer, value=1)
    log IERC20.Transfer(sender=buyer, receiver=empty(address), value=1)
    return self._record_order(dataset_, buyer, buyer, service_id, consumer_key, min_expires_at)


@external
@view
def has_valid_order(consumer: address, service_id: uint256) -> bool:
    """
    @notice True if `consumer` holds an unexpired order for `service_id` AND the
            dataset serves now: active (not disabled, not retired) and
            `consumer` not deny-listed. What proxies, compute and storage check.
    """
    if self.order_expires_at[consumer][service_id] <= block.timestamp:
        return False
    return staticcall IDataNFT(DATA_NFT).may_use(self.dataset, consumer)
