# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title FixedRateExchange
@notice Sells datatokens for MarketToken at a fixed price set by each dataset's
        controller. The buyer pays exactly the listed price; out of it a
        marketplace fee (recipient and rate chosen at publish time, at most
        MAX_MARKET_FEE_BPS) and a protocol fee (set by the exchange owner, at
        most MAX_PROTOCOL_FEE_BPS) are paid, and the rest goes to the dataset's
        controller at the time of sale. Payments move directly from buyer to
        recipients, so every payment is an ERC-20 Transfer event.
        `buy_and_order` buys one access and orders it in one transaction,
        paying through an EIP-2612 permit. `buy_and_order_via` does the same
        for a buyer who came through a marketplace that charges a consume fee
        (as Ocean's consume market fee): the buyer pays it on top, at most
        MAX_CONSUME_FEE_BPS of the price, to the marketplace's recipient.
        Protocol fee changes wait PROTOCOL_FEE_DELAY after they are proposed.
"""

from ethereum.ercs import IERC20
from snekmate.auth import ownable

initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership)


interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def factory() -> address: view
    def datatoken_of(dataset: uint256) -> address: view
    def market_info(dataset: uint256, buyer: address) -> (address, address): view


interface IDatatoken:
    def mint(to: address, amount: uint256): nonpayable
    def market_order(buyer: address, dataset_: uint256, service_id: uint256, consumer_key: Bytes[128], min_expires_at: uint256) -> uint256: nonpayable


interface IPermit:
    def permit(owner: address, spender: address, amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32): nonpayable


BPS: constant(uint256) = 10_000
MAX_MARKET_FEE_BPS: public(constant(uint256)) = 1_000
MAX_PROTOCOL_FEE_BPS: public(constant(uint256)) = 500
MAX_CONSUME_FEE_BPS: public(constant(uint256)) = 1_000
PROTOCOL_FEE_DELAY: public(constant(uint256)) = 2 * 86_400
MAX_BUY_AMOUNT: constant(uint256) = 1_000_000

MARKET_TOKEN: public(immutable(address))
DATA_NFT: public(immutable(address))

# protocol fee recipient (160 bits) | fee bps << 160: read on every sale, so one slot.
_protocol_fee: uint256
# a proposed protocol fee: recipient | fee bps << 160 | effective time << 176 (0: none)
_pending_protocol_fee: uint256

# dataset -> price of one datatoken, in MarketToken base units (0: not for sale here).
price: public(HashMap[uint256, uint256])
# dataset -> market fee recipient (160 bits) | fee bps (16 bits) << 160 | active << 176
_config: HashMap[uint256, uint256]


struct Quote:
    total: uint256
    publisher_amount: uint256
    market_fee: uint256
    protocol_fee: uint256


event ExchangeCreated:
    dataset: indexed(uint256)
    price: uint256
    market_fee_bps: uint256
    market_fee_recipient: address


event PriceChanged:
    dataset: indexed(uint256)
    old_price: uint256
    new_price: uint256


event MarketFeeChanged:
    dataset: indexed(uint256)
    market_fee_bps: uint256
    market_fee_recipient: address


event ExchangeActivated:
    dataset: indexed(uint256)
    active: bool


event ProtocolFeeChanged:
    fee_bps: uint256
    recipient: address


event ProtocolFeeProposed:
    fee_bps: uint256
    recipient: address
    effective_at: uint256


event ConsumeFeePaid:
    dataset: indexed(uint256)
    buyer: indexed(address)
    recipient: indexed(address)
    amount: uint256


# Who received the fees is in the MarketToken Transfer events of the same
# transaction (and in ExchangeCreated / ProtocolFeeChanged).
event Bought:
    dataset: indexed(uint256)
    buyer: indexed(address)
    publisher: indexed(address)
    amount: uint256
    total: uint256
    market_fee: uint256
    protocol_fee: uint256


@deploy
def __init__(market_token: address, data_nft: address, protocol_fee_bps_: uint256, protocol_fee_recipient_: address):
    ownable.__init__()
    assert market_token != empty(address) and data_nft != empty(address), "datagora: zero address"
    assert protocol_fee_bps_ <= MAX_PROTOCOL_FEE_BPS, "datagora: fee above bound"
    assert protocol_fee_bps_ == 0 or protocol_fee_recipient_ != empty(address), "datagora: zero address"
    MARKET_TOKEN = market_token
    DATA_NFT = data_nft
    self._protocol_fee = convert(protocol_fee_recipient_, uint256) | (protocol_fee_bps_ << 160)


@internal
@view
def _check_controller(dataset: uint256):
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(dataset), "datagora: not controller"


@external
def create(dataset: uint256, price_: uint256, market_fee_bps: uint256, market_fee_recipient: address):
    """
    @notice Put `dataset` on sale at `price_`. By the Factory at publish time,
            or later by the dataset's controller.
    """
    if msg.sender != staticcall IDataNFT(DATA_NFT).factory():
        self._check_controller(dataset)
    assert self.price[dataset] == 0, "datagora: exchange exists"
    assert price_ != 0, "datagora: zero price"
    assert market_fee_bps <= MAX_MARKET_FEE_BPS, "datagora: fee above bound"
    assert market_fee_bps == 0 or market_fee_recipient != empty(address), "datagora: zero address"
    self.price[dataset] = price_
    self._config[dataset] = convert(market_fee_recipient, uint256) | (market_fee_bps << 160) | (1 << 176)
    log ExchangeCreated(dataset=dataset, price=price_, market_fee_bps=market_fee_bps, market_fee_recipient=market_fee_recipient)


@external
def set_price(dataset: uint256, price_: uint256):
    self._check_controller(dataset)
    old: uint256 = self.price[dataset]
    assert old != 0, "datagora: no exchange"
    assert price_ != 0, "datagora: zero price"
    self.price[dataset] = price_
    log PriceChanged(dataset=dataset, old_price=old, new_price=price_)


@external
def set_active(dataset: uint256, active: bool):
    self._check_controller(dataset)
    assert self.price[dataset] != 0, "datagora: no exchange"
    config: uint256 = self._config[dataset] & ~(1 << 176)
    if active:
        config |= 1 << 176
    self._config[dataset] = config
    log ExchangeActivated(dataset=dataset, active=active)


@external
def set_market_fee(dataset: uint256, fee_bps: uint256, recipient: address):
    """
    @notice The marketplace that earns `dataset`'s market fee (its current
            recipient) may hand it to another address or lower it, never
            raise it: the seller agreed to the rate at publish time.
    """
    config: uint256 = self._config[dataset]
    assert self.price[dataset] != 0, "datagora: no exchange"
    assert msg.sender == convert(config & convert(max_value(uint160), uint256), address), "datagora: only the market fee recipient"
    assert fee_bps <= (config >> 160) & 65535, "datagora: fee above bound"
    assert fee_bps == 0 or recipient != empty(address), "datagora: zero address"
    self._config[dataset] = (config & (1 << 176)) | convert(recipient, uint256) | (fee_bps << 160)
    log MarketFeeChanged(dataset=dataset, market_fee_bps=fee_bps, market_fee_recipient=recipient)


@external
def propose_protocol_fee(fee_bps: uint256, recipient: address):
    """
    @notice Propose a new protocol fee (at most MAX_PROTOCOL_FEE_BPS); it can be
            applied PROTOCOL_FEE_DELAY later, so sellers and buyers see it coming.
            A new proposal replaces a pending one. Only the exchange owner.
    """
    ownable._check_owner()
    assert fee_bps <= MAX_PROTOCOL_FEE_BPS, "datagora: fee above bound"
    assert fee_bps == 0 or recipient != empty(address), "datagora: zero address"
    effective_at: uint256 = block.timestamp + PROTOCOL_FEE_DELAY
    self._pending_protocol_fee = convert(recipient, uint256) | (fee_bps << 160) | (effective_at << 176)
    log ProtocolFeeProposed(fee_bps=fee_bps, recipient=recipient, effective_at=effective_at)


@external
def apply_protocol_fee():
    """
    @notice Apply the proposed protocol fee once its delay is over. Anyone.
    """
    pending: uint256 = self._pending_protocol_fee
    assert pending != 0, "datagora: no such proposal"
    assert block.timestamp >= pending >> 176, "datagora: fee delay not over"
    fee: uint256 = pending & ((1 << 176) - 1)
    self._protocol_fee = fee
    self._pending_protocol_fee = 0
    log ProtocolFeeChanged(fee_bps=fee >> 160, recipient=convert(fee & convert(max_value(uint160), uint256), address))


@external
@view
def pending_protocol_fee() -> (uint256, address, uint256):
    """
    @notice The proposed protocol fee: (bps, recipient, when it may be applied); all 0: none.
    """
    pending: uint256 = self._pending_protocol_fee
    return (pending >> 160) & 65535, convert(pending & convert(max_value(uint160), uint256), address), pending >> 176


@internal
@view
def _quote(dataset: uint256, amount: uint256) -> Quote:
    unit: uint256 = self.price[dataset]
    assert unit != 0, "datagora: no exchange"
    total: uint256 = unit * amount
    market_fee: uint256 = total * ((self._config[dataset] >> 160) & 65535) // BPS
    protocol_fee: uint256 = total * (self._protocol_fee >> 160) // BPS
    return Quote(total=total, publisher_amount=total - market_fee - protocol_fee, market_fee=market_fee, protocol_fee=protocol_fee)


@external
@view
def quote(dataset: uint256, amount: uint256) -> Quote:
    """
    @notice What buying `amount` datatokens of `dataset` costs now, and who gets what.
    """
    return self._quote(dataset, amount)


@external
@view
def market_fee(dataset: uint256) -> (uint256, address):
    config: uint256 = self._config[dataset]
    return (config >> 160) & 65535, convert(config & convert(max_value(uint160), uint256), address)


@external
@view
def protocol_fee() -> (uint256, address):
    """
    @notice The protocol fee rate (basis points) and its recipient.
    """
    return self._protocol_fee >> 160, convert(self._protocol_fee & convert(max_value(uint160), uint256), address)


@external
@view
def is_active(dataset: uint256) -> bool:
    return (self._config[dataset] >> 176) & 1 == 1


@internal
@view
def _sale(dataset: uint256) -> (uint256, address, address):
    config: uint256 = self._config[dataset]
    assert (config >> 176) & 1 == 1, "datagora: exchange not active"
    # Reverts, before any token moves, unless the dataset is active and the
    # buyer may buy it (not deny-listed; allow-listed where sales are restricted).
    publisher: address = empty(address)
    datatoken: address = empty(address)
    publisher, datatoken = staticcall IDataNFT(DATA_NFT).market_info(dataset, msg.sender)
    return config, publisher, datatoken


@internal
def _pay(dataset: uint256, amount: uint256, max_total: uint256, config: uint256, publisher: address):
    assert amount != 0 and amount <= MAX_BUY_AMOUNT, "datagora: bad amount"
    q: Quote = self._quote(dataset, amount)
    assert q.total <= max_total, "datagora: price above maximum"
    market_recipient: address = convert(config & convert(max_value(uint160), uint256), address)
    protocol_recipient: address = convert(self._protocol_fee & convert(max_value(uint160), uint256), address)
    assert extcall IERC20(MARKET_TOKEN).transferFrom(msg.sender, publisher, q.publisher_amount, default_return_value=True), "datagora: payment failed"
    if q.market_fee != 0:
        assert extcall IERC20(MARKET_TOKEN).transferFrom(msg.sender, market_recipient, q.market_fee, default_return_value=True), "datagora: payment failed"
    if q.protocol_fee != 0:
        assert extcall IERC20(MARKET_TOKEN).transferFrom(msg.sender, protocol_recipient, q.protocol_fee, default_return_value=True), "datagora: payment failed"
    log Bought(
        dataset=dataset,
        buyer=msg.sender,
        publisher=publisher,
        amount=amount,
        total=q.total,
        market_fee=q.market_fee,
        protocol_fee=q.protocol_fee,
    )


@external
def buy(dataset: uint256, amount: uint256, max_total: uint256):
    """
    @notice Buy `amount` datatokens of `dataset`, paying at most `max_total`
            (needs a MarketToken allowance for this exchange).
    """
    config: uint256 = 0
    publisher: address = empty(address)
    datatoken: address = empty(address)
    config, publisher, datatoken = self._sale(dataset)
    self._pay(dataset, amount, max_total, config, publisher)
    extcall IDatatoken(datatoken).mint(msg.sender, amount)


@external
def buy_and_order(
    dataset: uint256,
    service_id: uint256,
    consumer_key: Bytes[128],
    max_price: uint256,
    min_expires_at: uint256,
    deadline: uint256,
    v: uint8,
    r: bytes32,
    s: bytes32,
) -> uint256:
    """
    @notice Buy one order of service `service_id` of `dataset`, in one
            transaction: the service's datatokens (`service_units`, usually 1)
            at the dataset's price each, so the price is per (dataset,
            service). With `deadline` != 0, (`v`, `r`, `s`) is the buyer's
            EIP-2612 permit for this exchange over `max_price`, so no separate
            approve is needed. Reverts (nothing paid) if the price is above
            `max_price` or the order would expire before `min_expires_at` (the
            service's terms changed after the buyer looked).
    @return The order's expiry.
    """
    if deadline != 0:
        # A permit that someone front-ran has already set the allowance, so a
        # failed permit is not fatal: the payment below checks the allowance.
        permitted: bool = raw_call(
            MARKET_TOKEN,
            abi_encode(msg.sender, self, max_price, deadline, v, r, s, method_id=method_id("permit(address,address,uint256,uint256,uint8,bytes32,bytes32)")),
            revert_on_failure=False,
        )
    config: uint256 = 0
    publisher: address = empty(address)
    datatoken: address = empty(address)
    config, publisher, datatoken = self._sale(dataset)
    # The order first, to learn how many datatokens the service costs; its
    # payment follows in this transaction, so both happen or neither does.
    order: uint256 = extcall IDatatoken(datatoken).market_order(msg.sender, dataset, service_id, consumer_key, min_expires_at)
    self._pay(dataset, order >> 128, max_price, config, publisher)
    return order & convert(max_value(uint128), uint256)


@external
def buy_and_order_via(
    dataset: uint256,
    service_id: uint256,
    consumer_key: Bytes[128],
    max_price: uint256,
    min_expires_at: uint256,
    deadline: uint256,
    v: uint8,
    r: bytes32,
    s: bytes32,
    consume_fee_recipient: address,
    consume_fee_bps: uint256,
) -> uint256:
    """
    @notice `buy_and_order` through a marketplace that charges a consume fee: the
            buyer pays the order's price and, on top, `consume_fee_bps` of it (at
            most MAX_CONSUME_FEE_BPS) to `consume_fee_recipient`, the marketplace
            the buyer used. `max_price` bounds the whole (price and consume fee),
            and the permit covers it.
    @return The order's expiry.
    """
    assert consume_fee_bps <= MAX_CONSUME_FEE_BPS, "datagora: fee above bound"
    assert consume_fee_bps == 0 or consume_fee_recipient != empty(address), "datagora: zero address"
    if deadline != 0:
        permitted: bool = raw_call(
            MARKET_TOKEN,
            abi_encode(msg.sender, self, max_price, deadline, v, r, s, method_id=method_id("permit(address,address,uint256,uint256,uint8,bytes32,bytes32)")),
            revert_on_failure=False,
        )
    config: uint256 = 0
    publisher: address = empty(address)
    datatoken: address = empty(address)
    config, publisher, datatoken = self._sale(dataset)
    order: uint256 = extcall IDatatoken(datatoken).market_order(msg.sender, dataset, service_id, consumer_key, min_expires_at)
    units: uint256 = order >> 128
    assert units != 0 and units <= MAX_BUY_AMOUNT, "datagora: bad amount"
    fee: uint256 = self._quote(dataset, units).total * consume_fee_bps // BPS
    assert fee <= max_price, "datagora: price above maximum"
    self._pay(dataset, units, max_price - fee, config, publisher)
    if fee != 0:
        assert extcall IERC20(MARKET_TOKEN).transferFrom(msg.sender, consume_fee_recipient, fee, default_return_value=True), "datagora: payment failed"
        log ConsumeFeePaid(dataset=dataset, buyer=msg.sender, recipient=consume_fee_recipient, amount=fee)
    return order & convert(max_value(uint128), uint256)
