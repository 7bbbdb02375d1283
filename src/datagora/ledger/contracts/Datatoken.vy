# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title Datatoken
@notice The template of every dataset's ERC-20 (snekmate, with EIP-2612
        permit); each dataset gets an EIP-1167 clone. Holding one datatoken
        (decimals 0) pays for orders: an order of a service spends that
        service's number of datatokens (its price in datatokens, 1 unless the
        controller sets more) and records an expiry per consumer and service. Name and symbol are derived
        from the dataset id so that a clone needs a single storage slot.
"""

from ethereum.ercs import IERC20
from snekmate.auth import ownable
from snekmate.tokens import erc20
from snekmate.utils import ecdsa

initializes: ownable
initializes: erc20[ownable := ownable]

exports: (
    erc20.transfer,
    erc20.approve,
    erc20.transferFrom,
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


# EIP-712: a clone's domain name is its own `name()` ("datagora dataset #7"), as
# wallets build it, so the domain is computed per call rather than fixed in the template.
_DOMAIN_TYPE_HASH: constant(bytes32) = keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
_PERMIT_TYPE_HASH: constant(bytes32) = keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)")
_VERSION: constant(String[1]) = "1"

DATA_NFT: public(immutable(address))
EXCHANGE: public(immutable(address))
DISPENSER: public(immutable(address))

MAX_CONSUMER_KEY: constant(uint256) = 128
MAX_TIMEOUT: constant(uint256) = 2**64 - 1
MAX_UNITS: constant(uint256) = 1_000_000
# A market order returns its expiry | its units << UNITS_SHIFT: one word.
UNITS_SHIFT: constant(uint256) = 128

dataset: public(uint256)
# service id -> seconds an order stays valid (64 bits; 0: the service is closed)
# | (datatokens an order spends - 1) << 64. One slot, read once per order.
_service: HashMap[uint256, uint256]
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


event ServiceUnitsChanged:
    dataset: indexed(uint256)
    service_id: indexed(uint256)
    units: uint256


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
        assert timeout <= MAX_TIMEOUT, "datagora: timeout too far"
        self._service[service_id] = timeout
        log ServiceChanged(dataset=dataset_, service_id=service_id, timeout=timeout)


@internal
@view
def _name() -> String[96]:
    return concat("datagora dataset #", uint2str(self.dataset))


@external
@view
def name() -> String[96]:
    return self._name()


@internal
@view
def _domain_separator() -> bytes32:
    return keccak256(abi_encode(_DOMAIN_TYPE_HASH, keccak256(self._name()), keccak256(_VERSION), chain.id, self))


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    return self._domain_separator()


@external
@view
def eip712Domain() -> (bytes1, String[96], String[1], uint256, address, bytes32, DynArray[uint256, 1]):
    """
    @notice EIP-5267: the domain permits are signed over; its name is `name()`.
    """
    return (0x0f, self._name(), _VERSION, chain.id, self, empty(bytes32), empty(DynArray[uint256, 1]))


@external
def permit(owner: address, spender: address, amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32):
    """
    @notice EIP-2612 permit over the domain named by `name()` (see `eip712Domain`).
    """
    assert block.timestamp <= deadline, "erc20: expired deadline"
    nonce: uint256 = erc20.nonces[owner]
    erc20.nonces[owner] = unsafe_add(nonce, 1)
    struct_hash: bytes32 = keccak256(abi_encode(_PERMIT_TYPE_HASH, owner, spender, amount, nonce, deadline))
    digest: bytes32 = keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))
    signer: address = ecdsa._recover_vrs(digest, convert(v, uint256), convert(r, uint256), convert(s, uint256))
    assert signer == owner, "erc20: invalid signature"
    erc20._approve(owner, spender, amount)


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
    assert timeout <= MAX_TIMEOUT, "datagora: timeout too far"
    self._service[service_id] = (self._service[service_id] & ~MAX_TIMEOUT) | timeout
    log ServiceChanged(dataset=self.dataset, service_id=service_id, timeout=timeout)


@external
def set_service_units(service_id: uint256, units: uint256):
    """
    @notice Price service `service_id` at `units` datatokens per order (1 by
            default): with the exchange's price per datatoken, this is the
            price per (dataset, service). Only the dataset's controller.
    """
    assert msg.sender == self._controller(), "datagora: not controller"
    assert units != 0, "datagora: zero amount"
    assert units <= MAX_UNITS, "datagora: too many units"
    self._service[service_id] = (self._service[service_id] & MAX_TIMEOUT) | ((units - 1) << 64)
    log ServiceUnitsChanged(dataset=self.dataset, service_id=service_id, units=units)


@external
@view
def service_timeout(service_id: uint256) -> uint256:
    """
    @notice Seconds an order of `service_id` stays valid; 0: the service is closed.
    """
    return self._service[service_id] & MAX_TIMEOUT


@external
@view
def service_units(service_id: uint256) -> uint256:
    """
    @notice Datatokens one order of `service_id` spends.
    """
    return (self._service[service_id] >> 64) + 1


@internal
def _record_order(dataset_: uint256, consumer: address, payer: address, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256, service: uint256) -> uint256:
    assert consumer != empty(address), "datagora: zero address"
    timeout: uint256 = service & MAX_TIMEOUT
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
def _order(holder: address, consumer: address, payer: address, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256, max_units: uint256) -> uint256:
    dataset_: uint256 = self.dataset
    # Reverts unless the dataset is active and `consumer` may buy it (deny- and allow-lists).
    controller: address = empty(address)
    datatoken: address = empty(address)
    controller, datatoken = staticcall IDataNFT(DATA_NFT).market_info(dataset_, consumer)
    service: uint256 = self._service[service_id]
    units: uint256 = (service >> 64) + 1
    assert erc20.balanceOf[holder] != 0, "datagora: no datatoken"
    # The price guard of an order paid with datatokens already held.
    assert units <= max_units, "datagora: price above maximum"
    erc20._burn(holder, units)
    return self._record_order(dataset_, consumer, payer, service_id, consumer_key, min_expires_at, service)


@external
def order(service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256, max_units: uint256) -> uint256:
    """
    @notice Spend the service's datatokens (`service_units`, at most
            `max_units`) on service `service_id` for yourself. `consumer_key`
            is your public re-encryption key. Reverts if the order would expire
            before `min_expires_at` (the terms you saw).
    @return The order's expiry (unix seconds).
    """
    return self._order(msg.sender, msg.sender, msg.sender, service_id, consumer_key, min_expires_at, max_units)


@external
def order_for(consumer: address, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256, max_units: uint256) -> uint256:
    """
    @notice Spend your datatokens on an order for `consumer` (you pay).
    """
    return self._order(msg.sender, consumer, msg.sender, service_id, consumer_key, min_expires_at, max_units)


@external
def market_order(buyer: address, dataset_: uint256, service_id: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY], min_expires_at: uint256) -> uint256:
    """
    @notice The exchange's and dispenser's one-transaction buy-and-order: the
            service's datatokens are minted to `buyer` and spent at once on an
            order by and for `buyer`. Both Transfer events are emitted, so any
            ERC-20 reader sees the mint and the spend; balances and supply end
            where they began, so no storage is written for them. The caller has
            checked that `buyer` may buy, found this datatoken as `dataset_`'s
            in the DataNFT (so `dataset_` is this clone's dataset and need not
            be read from storage), and takes the payment for the returned
            units in the same transaction.
    @return The order's expiry | the datatokens it spent << 128.
    """
    assert msg.sender == EXCHANGE or msg.sender == DISPENSER, "datagora: only the market contracts"
    service: uint256 = self._service[service_id]
    units: uint256 = (service >> 64) + 1
    log IERC20.Transfer(sender=empty(address), receiver=buyer, value=units)
    log IERC20.Transfer(sender=buyer, receiver=empty(address), value=units)
    expires_at: uint256 = self._record_order(dataset_, buyer, buyer, service_id, consumer_key, min_expires_at, service)
    return expires_at | (units << UNITS_SHIFT)


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
