# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title Dispenser
@notice Free datatokens for free-but-tracked datasets: anyone may take up to
        the dataset's per-address limit, and all together up to its overall cap
        (if the controller set one), so a farm of fresh addresses cannot drain
        it. Every access is still an on-chain order.
"""

interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def market_info(dataset: uint256, buyer: address) -> (address, address): view
    def factory() -> address: view


interface IDatatoken:
    def mint(to: address, amount: uint256): nonpayable
    def market_order(buyer: address, dataset_: uint256, service_id: uint256, consumer_key: Bytes[128], min_expires_at: uint256) -> uint256: nonpayable


DATA_NFT: public(immutable(address))

# dataset -> max datatokens per address (0: no dispenser)
max_per_address: public(HashMap[uint256, uint256])
active: public(HashMap[uint256, bool])
dispensed: public(HashMap[uint256, HashMap[address, uint256]])
# dataset -> datatokens taken by everyone (128 bits) | overall cap (0: none) << 128
_supply: HashMap[uint256, uint256]


event DispenserCreated:
    dataset: indexed(uint256)
    max_per_address: uint256


event DispenserChanged:
    dataset: indexed(uint256)
    max_per_address: uint256
    active: bool


event DispenserCapChanged:
    dataset: indexed(uint256)
    cap: uint256


event Dispensed:
    dataset: indexed(uint256)
    to: indexed(address)
    amount: uint256


@deploy
def __init__(data_nft: address):
    assert data_nft != empty(address), "datagora: zero address"
    DATA_NFT = data_nft


@internal
@view
def _check_controller(dataset: uint256):
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(dataset), "datagora: not controller"


@external
def create(dataset: uint256, max_per_address_: uint256):
    if msg.sender != staticcall IDataNFT(DATA_NFT).factory():
        self._check_controller(dataset)
    assert self.max_per_address[dataset] == 0, "datagora: dispenser exists"
    assert max_per_address_ != 0, "datagora: zero amount"
    self.max_per_address[dataset] = max_per_address_
    self.active[dataset] = True
    log DispenserCreated(dataset=dataset, max_per_address=max_per_address_)


@external
def configure(dataset: uint256, max_per_address_: uint256, active_: bool):
    self._check_controller(dataset)
    assert self.max_per_address[dataset] != 0, "datagora: no dispenser"
    assert max_per_address_ != 0, "datagora: zero amount"
    self.max_per_address[dataset] = max_per_address_
    self.active[dataset] = active_
    log DispenserChanged(dataset=dataset, max_per_address=max_per_address_, active=active_)


@external
def set_cap(dataset: uint256, cap: uint256):
    """
    @notice Cap the datatokens everyone together may take from now on (counting
            what was taken since the cap existed); 0 removes the cap. Only the controller.
    """
    self._check_controller(dataset)
    assert self.max_per_address[dataset] != 0, "datagora: no dispenser"
    assert cap < 2**128, "datagora: cap too far"
    self._supply[dataset] = (cap << 128) | (self._supply[dataset] & convert(max_value(uint128), uint256))
    log DispenserCapChanged(dataset=dataset, cap=cap)


@external
@view
def cap(dataset: uint256) -> (uint256, uint256):
    """
    @notice The overall cap (0: none) and how many datatokens have been taken in all.
    """
    supply: uint256 = self._supply[dataset]
    return supply >> 128, supply & convert(max_value(uint128), uint256)


@internal
@view
def _datatoken(dataset: uint256) -> address:
    assert self.active[dataset], "datagora: no dispenser"
    # Reverts unless the dataset is active and the taker may have it (access lists).
    controller: address = empty(address)
    datatoken: address = empty(address)
    controller, datatoken = staticcall IDataNFT(DATA_NFT).market_info(dataset, msg.sender)
    return datatoken


@internal
def _take(dataset: uint256, amount: uint256):
    assert amount != 0, "datagora: zero amount"
    taken: uint256 = self.dispensed[dataset][msg.sender] + amount
    assert taken <= self.max_per_address[dataset], "datagora: dispenser limit reached"
    self.dispensed[dataset][msg.sender] = taken
    supply: uint256 = self._supply[dataset]
    cap: uint256 = supply >> 128
    total: uint256 = (supply & convert(max_value(uint128), uint256)) + amount
    assert cap == 0 or total <= cap, "datagora: dispenser cap reached"
    self._supply[dataset] = (cap << 128) | total
    log Dispensed(dataset=dataset, to=msg.sender, amount=amount)


@external
def dispense(dataset: uint256, amount: uint256):
    datatoken: address = self._datatoken(dataset)
    self._take(dataset, amount)
    extcall IDatatoken(datatoken).mint(msg.sender, amount)


@external
def dispense_and_order(dataset: uint256, service_id: uint256, consumer_key: Bytes[128], min_expires_at: uint256) -> uint256:
    """
    @notice Take the service's free datatokens (`service_units`, usually 1;
            they count against the per-address limit) and order service
            `service_id` with them, in one transaction; reverts if the order
            would expire before `min_expires_at`.
    """
    datatoken: address = self._datatoken(dataset)
    order: uint256 = extcall IDatatoken(datatoken).market_order(msg.sender, dataset, service_id, consumer_key, min_expires_at)
    self._take(dataset, order >> 128)
    return order & convert(max_value(uint128), uint256)
