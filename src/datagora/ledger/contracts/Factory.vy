# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title Factory
@notice Publishes a dataset in ONE transaction: mints its data NFT, creates its
        datatoken (an EIP-1167 clone of the template), records the metadata
        hash/URI and storage hashes, opens one service and sets its price (fixed
        rate, free dispenser, or none). All or nothing: any failure reverts all.
"""

interface IDataNFT:
    def mint_dataset(owner_: address, datatoken: address, metadata_hash_: bytes32, metadata_uri: String[432], manifest_hash_: bytes32, merkle_root_: bytes32) -> uint256: nonpayable


interface IDatatoken:
    def initialize(dataset_: uint256, service_id: uint256, timeout: uint256): nonpayable


interface IExchange:
    def create(dataset: uint256, price_: uint256, market_fee_bps: uint256, market_fee_recipient: address): nonpayable


interface IDispenser:
    def create(dataset: uint256, max_per_address_: uint256): nonpayable


PRICING_NONE: constant(uint8) = 0
PRICING_FIXED: constant(uint8) = 1
PRICING_FREE: constant(uint8) = 2


struct PublishParams:
    metadata_hash: bytes32
    metadata_uri: String[432]
    manifest_hash: bytes32
    merkle_root: bytes32
    order_timeout: uint256
    service_id: uint256
    pricing: uint8
    price: uint256
    market_fee_bps: uint256
    market_fee_recipient: address
    dispenser_max_per_address: uint256


DATA_NFT: public(immutable(address))
DATATOKEN_TEMPLATE: public(immutable(address))
EXCHANGE: public(immutable(address))
DISPENSER: public(immutable(address))


@deploy
def __init__(data_nft: address, datatoken_template: address, exchange: address, dispenser: address):
    DATA_NFT = data_nft
    DATATOKEN_TEMPLATE = datatoken_template
    EXCHANGE = exchange
    DISPENSER = dispenser


@external
def publish(params: PublishParams) -> (uint256, address):
    """
    @notice Publish a dataset owned by the caller; service `params.service_id`
            (0: download, 1: compute, ...) is opened with orders valid for
            `params.order_timeout` seconds, and no other: a compute-only
            dataset is published with service 1 and never sells a download.
    @return The dataset id and its datatoken's address.
    """
    assert params.pricing <= PRICING_FREE, "datagora: unknown pricing"
    assert params.order_timeout != 0, "datagora: zero order timeout"
    datatoken: address = create_minimal_proxy_to(DATATOKEN_TEMPLATE)
    dataset: uint256 = extcall IDataNFT(DATA_NFT).mint_dataset(
        msg.sender, datatoken, params.metadata_hash, params.metadata_uri, params.manifest_hash, params.merkle_root
    )
    extcall IDatatoken(datatoken).initialize(dataset, params.service_id, params.order_timeout)
    if params.pricing == PRICING_FIXED:
        extcall IExchange(EXCHANGE).create(dataset, params.price, params.market_fee_bps, params.market_fee_recipient)
    elif params.pricing == PRICING_FREE:
        extcall IDispenser(DISPENSER).create(dataset, params.dispenser_max_per_address)
    return dataset, datatoken
