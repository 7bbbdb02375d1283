"""Standard conformance: datasets and datatokens as any wallet or ERC tool sees them.

Everything is read and sent through the generic ERC-20 / ERC-721 / EIP-2612 ABIs
below, with plain web3 contract objects, never datagora's wrappers — except to
publish, to mint datatokens (not part of ERC-20) and to sign permits.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils import function_signature_to_4byte_selector, keccak
from web3.contract import Contract
from web3.types import TxReceipt

from datagora.ledger import Ledger
from datagora.ledger.errors import InsufficientFunds, NotController, SignatureError
from helpers import BUYER, MARKET, OTHER, OWNER, PRICE, fund, h, publish

ZERO = "0x" + "00" * 20

ERC20_ABI = json.loads("""[
 {"type": "function", "name": "name", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "string"}]},
 {"type": "function", "name": "symbol", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "string"}]},
 {"type": "function", "name": "decimals", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "uint8"}]},
 {"type": "function", "name": "totalSupply", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "uint256"}]},
 {"type": "function", "name": "balanceOf", "stateMutability": "view",
  "inputs": [{"name": "owner", "type": "address"}],
  "outputs": [{"name": "", "type": "uint256"}]},
 {"type": "function", "name": "allowance", "stateMutability": "view",
  "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
  "outputs": [{"name": "", "type": "uint256"}]},
 {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
  "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
  "outputs": [{"name": "", "type": "bool"}]},
 {"type": "function", "name": "approve", "stateMutability": "nonpayable",
  "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
  "outputs": [{"name": "", "type": "bool"}]},
 {"type": "function", "name": "transferFrom", "stateMutability": "nonpayable",
  "inputs": [{"name": "from", "type": "address"}, {"name": "to", "type": "address"},
             {"name": "value", "type": "uint256"}],
  "outputs": [{"name": "", "type": "bool"}]},
 {"type": "event", "name": "Transfer", "anonymous": false,
  "inputs": [{"name": "from", "type": "address", "indexed": true},
             {"name": "to", "type": "address", "indexed": true},
             {"name": "value", "type": "uint256", "indexed": false}]},
 {"type": "event", "name": "Approval", "anonymous": false,
  "inputs": [{"name": "owner", "type": "address", "indexed": true},
             {"name": "spender", "type": "address", "indexed": true},
             {"name": "value", "type": "uint256", "indexed": false}]}
]""")

# EIP-2612 (permit) and EIP-5267 (eip712Domain), which wallets read to sign permits.
EIP2612_ABI = json.loads("""[
 {"type": "function", "name": "nonces", "stateMutability": "view",
  "inputs": [{"name": "owner", "type": "address"}],
  "outputs": [{"name": "", "type": "uint256"}]},
 {"type": "function", "name": "DOMAIN_SEPARATOR", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "bytes32"}]},
 {"type": "function", "name": "eip712Domain", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "fields", "type": "bytes1"}, {"name": "name", "type": "string"},
              {"name": "version", "type": "string"}, {"name": "chainId", "type": "uint256"},
              {"name": "verifyingContract", "type": "address"},
              {"name": "salt", "type": "bytes32"}, {"name": "extensions", "type": "uint256[]"}]}
]""")

ERC721_ABI = json.loads("""[
 {"type": "function", "name": "supportsInterface", "stateMutability": "view",
  "inputs": [{"name": "interfaceId", "type": "bytes4"}],
  "outputs": [{"name": "", "type": "bool"}]},
 {"type": "function", "name": "name", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "string"}]},
 {"type": "function", "name": "symbol", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "string"}]},
 {"type": "function", "name": "tokenURI", "stateMutability": "view",
  "inputs": [{"name": "tokenId", "type": "uint256"}],
  "outputs": [{"name": "", "type": "string"}]},
 {"type": "function", "name": "balanceOf", "stateMutability": "view",
  "inputs": [{"name": "owner", "type": "address"}],
  "outputs": [{"name": "", "type": "uint256"}]},
 {"type": "function", "name": "ownerOf", "stateMutability": "view",
  "inputs": [{"name": "tokenId", "type": "uint256"}],
  "outputs": [{"name": "", "type": "address"}]},
 {"type": "function", "name": "safeTransferFrom", "stateMutability": "nonpayable",
  "inputs": [{"name": "from", "type": "address"}, {"name": "to", "type": "address"},
             {"name": "tokenId", "type": "uint256"}, {"name": "data", "type": "bytes"}],
  "outputs": []},
 {"type": "function", "name": "safeTransferFrom", "stateMutability": "nonpayable",
  "inputs": [{"name": "from", "type": "address"}, {"name": "to", "type": "address"},
             {"name": "tokenId", "type": "uint256"}],
  "outputs": []},
 {"type": "function", "name": "transferFrom", "stateMutability": "nonpayable",
  "inputs": [{"name": "from", "type": "address"}, {"name": "to", "type": "address"},
             {"name": "tokenId", "type": "uint256"}],
  "outputs": []},
 {"type": "function", "name": "approve", "stateMutability": "nonpayable",
  "inputs": [{"name": "approved", "type": "address"}, {"name": "tokenId", "type": "uint256"}],
  "outputs": []},
 {"type": "function", "name": "getApproved", "stateMutability": "view",
  "inputs": [{"name": "tokenId", "type": "uint256"}],
  "outputs": [{"name": "", "type": "address"}]},
 {"type": "function", "name": "setApprovalForAll", "stateMutability": "nonpayable",
  "inputs": [{"name": "operator", "type": "address"}, {"name": "approved", "type": "bool"}],
  "outputs": []},
 {"type": "function", "name": "isApprovedForAll", "stateMutability": "view",
  "inputs": [{"name": "owner", "type": "address"}, {"name": "operator", "type": "address"}],
  "outputs": [{"name": "", "type": "bool"}]},
 {"type": "event", "name": "Transfer", "anonymous": false,
  "inputs": [{"name": "from", "type": "address", "indexed": true},
             {"name": "to", "type": "address", "indexed": true},
             {"name": "tokenId", "type": "uint256", "indexed": true}]},
 {"type": "event", "name": "Approval", "anonymous": false,
  "inputs": [{"name": "owner", "type": "address", "indexed": true},
             {"name": "approved", "type": "address", "indexed": true},
             {"name": "tokenId", "type": "uint256", "indexed": true}]},
 {"type": "event", "name": "ApprovalForAll", "anonymous": false,
  "inputs": [{"name": "owner", "type": "address", "indexed": true},
             {"name": "operator", "type": "address", "indexed": true},
             {"name": "approved", "type": "bool", "indexed": false}]}
]""")


def interface_id(*signatures: str) -> bytes:
    """The ERC-165 identifier of an interface: the XOR of its function selectors."""
    out = 0
    for signature in signatures:
        out ^= int.from_bytes(function_signature_to_4byte_selector(signature), "big")
    return out.to_bytes(4, "big")


ERC165_ID = interface_id("supportsInterface(bytes4)")
ERC721_ID = interface_id(
    "balanceOf(address)",
    "ownerOf(uint256)",
    "safeTransferFrom(address,address,uint256,bytes)",
    "safeTransferFrom(address,address,uint256)",
    "transferFrom(address,address,uint256)",
    "approve(address,uint256)",
    "setApprovalForAll(address,bool)",
    "getApproved(uint256)",
    "isApprovedForAll(address,address)",
)
ERC721_METADATA_ID = interface_id("name()", "symbol()", "tokenURI(uint256)")


def erc20(ledger: Ledger, address: str) -> Contract:
    return ledger.chain.w3.eth.contract(address=address, abi=ERC20_ABI + EIP2612_ABI)


def erc721(ledger: Ledger) -> Contract:
    return ledger.chain.w3.eth.contract(address=ledger.data_nft.address, abi=ERC721_ABI)


def send(ledger: Ledger, account: Any, contract: Contract, function: str, *args: Any) -> TxReceipt:
    """Send `function(*args)` as a wallet would: calldata encoded from the generic ABI."""
    data = contract.encode_abi(function, args=list(args))
    return ledger.chain.transact(account, {"to": contract.address, "data": data}, function)


def events(contract: Contract, receipt: TxReceipt, name: str) -> list[dict[str, Any]]:
    """The `name` events `contract` emitted in `receipt`, decoded through the generic ABI."""
    event = contract.events[name]()
    topic = bytes.fromhex(event.topic.removeprefix("0x"))
    return [
        dict(event.process_log(log)["args"])
        for log in receipt["logs"]
        if log["address"] == contract.address and log["topics"] and bytes(log["topics"][0]) == topic
    ]


def receipt_of(ledger: Ledger, tx_hash: str) -> TxReceipt:
    return ledger.chain.w3.eth.get_transaction_receipt(tx_hash)


# -- datasets: ERC-721 ---------------------------------------------------------------------


def test_the_standard_interface_ids_are_the_documented_ones() -> None:
    # Derived from the selectors above, so the generic ABI really is the standard one.
    assert (
        bytes.fromhex("01ffc9a7"),
        bytes.fromhex("80ac58cd"),
        bytes.fromhex("5b5e139f"),
    ) == (ERC165_ID, ERC721_ID, ERC721_METADATA_ID)


def test_the_data_nft_declares_the_standard_interfaces(ledger: Ledger) -> None:
    nft = erc721(ledger)
    for interface in (ERC165_ID, ERC721_ID, ERC721_METADATA_ID):
        assert nft.functions.supportsInterface(interface).call() is True
    # ERC-165: the invalid id 0xffffffff must be reported as unsupported.
    assert nft.functions.supportsInterface(b"\xff\xff\xff\xff").call() is False


def test_a_dataset_is_an_erc721_token(ledger: Ledger) -> None:
    nft = erc721(ledger)
    uri = f"ipfs://bafy-metadata/{ledger.chain.backend}.json"
    held = nft.functions.balanceOf(OWNER.address).call()
    pub = publish(ledger, metadata_uri=uri)
    assert events(nft, receipt_of(ledger, pub.tx.tx_hash), "Transfer") == [
        {"from": ZERO, "to": OWNER.address, "tokenId": pub.dataset}
    ]
    assert nft.functions.ownerOf(pub.dataset).call() == OWNER.address
    assert nft.functions.balanceOf(OWNER.address).call() == held + 1
    assert nft.functions.tokenURI(pub.dataset).call() == uri
    assert nft.functions.name().call() == "datagora datasets"
    assert nft.functions.symbol().call() == "DGDS"


def test_a_standard_transfer_from_moves_control(ledger: Ledger) -> None:
    nft = erc721(ledger)
    dataset = publish(ledger).dataset
    owner_held = nft.functions.balanceOf(OWNER.address).call()
    other_held = nft.functions.balanceOf(OTHER.address).call()

    receipt = send(ledger, OWNER, nft, "transferFrom", OWNER.address, OTHER.address, dataset)

    assert events(nft, receipt, "Transfer") == [
        {"from": OWNER.address, "to": OTHER.address, "tokenId": dataset}
    ]
    assert nft.functions.ownerOf(dataset).call() == OTHER.address
    assert nft.functions.balanceOf(OWNER.address).call() == owner_held - 1
    assert nft.functions.balanceOf(OTHER.address).call() == other_held + 1
    # Control went with the token: the new holder updates (its re-key: a new version
    # with a new manifest, see test_transfer_lifecycle), the old one cannot.
    ledger.data_nft.update(OTHER, dataset, h("v2"), "ipfs://v2", h("manifest 2"), h("root 2"))
    with pytest.raises(NotController):
        ledger.data_nft.update(OWNER, dataset, h("v3"), "ipfs://v3")
    info = ledger.data_nft.get_dataset(dataset)
    assert (info.controller, info.version, info.metadata_hash) == (OTHER.address, 2, h("v2"))
    assert nft.functions.tokenURI(dataset).call() == "ipfs://v2"


def test_approvals_and_safe_transfers_work_as_in_erc721(ledger: Ledger) -> None:
    nft = erc721(ledger)
    dataset = publish(ledger).dataset

    receipt = send(ledger, OWNER, nft, "approve", MARKET.address, dataset)
    assert events(nft, receipt, "Approval") == [
        {"owner": OWNER.address, "approved": MARKET.address, "tokenId": dataset}
    ]
    assert nft.functions.getApproved(dataset).call() == MARKET.address
    # Being approved to move the token is not controlling the dataset.
    with pytest.raises(NotController):
        ledger.data_nft.update(MARKET, dataset, h("v2"), "")

    send(ledger, MARKET, nft, "transferFrom", OWNER.address, BUYER.address, dataset)
    assert nft.functions.ownerOf(dataset).call() == BUYER.address
    assert nft.functions.getApproved(dataset).call() == ZERO  # cleared by the transfer

    receipt = send(ledger, BUYER, nft, "setApprovalForAll", OTHER.address, True)
    assert events(nft, receipt, "ApprovalForAll") == [
        {"owner": BUYER.address, "operator": OTHER.address, "approved": True}
    ]
    assert nft.functions.isApprovedForAll(BUYER.address, OTHER.address).call() is True
    receipt = send(ledger, OTHER, nft, "safeTransferFrom", BUYER.address, OWNER.address, dataset)
    assert events(nft, receipt, "Transfer") == [
        {"from": BUYER.address, "to": OWNER.address, "tokenId": dataset}
    ]
    receipt = send(
        ledger, OWNER, nft, "safeTransferFrom", OWNER.address, BUYER.address, dataset, b"hello"
    )
    assert events(nft, receipt, "Transfer") == [
        {"from": OWNER.address, "to": BUYER.address, "tokenId": dataset}
    ]
    assert nft.functions.ownerOf(dataset).call() == BUYER.address
    assert ledger.data_nft.controller(dataset) == BUYER.address


# -- datatokens and the MarketToken: ERC-20 ------------------------------------------------


def test_a_datatoken_is_an_erc20_token(ledger: Ledger) -> None:
    pub = publish(ledger)
    dt = erc20(ledger, pub.datatoken)
    assert ledger.data_nft.datatoken_of(pub.dataset) == pub.datatoken
    assert dt.functions.name().call() == f"datagora dataset #{pub.dataset}"
    assert dt.functions.symbol().call() == f"DT{pub.dataset}"
    assert dt.functions.decimals().call() == 0
    assert dt.functions.totalSupply().call() == 0
    tx = ledger.datatoken(pub.dataset).mint(OWNER, BUYER.address, 5)
    assert events(dt, receipt_of(ledger, tx.tx_hash), "Transfer") == [
        {"from": ZERO, "to": BUYER.address, "value": 5}
    ]
    assert dt.functions.totalSupply().call() == 5
    assert dt.functions.balanceOf(BUYER.address).call() == 5
    assert dt.functions.balanceOf(OWNER.address).call() == 0


def test_the_market_token_is_an_erc20_token(ledger: Ledger) -> None:
    mt = erc20(ledger, ledger.market_token.address)
    assert mt.functions.name().call() == "datagora Market Token"
    assert mt.functions.symbol().call() == "DGM"
    assert mt.functions.decimals().call() == 18
    supply = mt.functions.totalSupply().call()
    fund(ledger, BUYER.address, 7 * PRICE)
    assert mt.functions.totalSupply().call() == supply + 7 * PRICE


@pytest.fixture(params=["MarketToken", "Datatoken"])
def token(request: pytest.FixtureRequest, ledger: Ledger) -> Contract:
    """A token in which BUYER holds 100 units."""
    if request.param == "MarketToken":
        fund(ledger, BUYER.address, 100)
        return erc20(ledger, ledger.market_token.address)
    pub = publish(ledger)
    ledger.datatoken(pub.dataset).mint(OWNER, BUYER.address, 100)
    return erc20(ledger, pub.datatoken)


def test_standard_transfer_approve_and_transfer_from(ledger: Ledger, token: Contract) -> None:
    f = token.functions

    def balances() -> list[int]:
        return [f.balanceOf(a.address).call() for a in (BUYER, OTHER, OWNER)]

    supply = f.totalSupply().call()
    start = balances()
    assert start[0] == 100
    # transfer returns true, as ERC-20 requires.
    assert f.transfer(OTHER.address, 30).call({"from": BUYER.address}) is True
    receipt = send(ledger, BUYER, token, "transfer", OTHER.address, 30)
    assert events(token, receipt, "Transfer") == [
        {"from": BUYER.address, "to": OTHER.address, "value": 30}
    ]
    assert balances() == [start[0] - 30, start[1] + 30, start[2]]

    receipt = send(ledger, BUYER, token, "approve", MARKET.address, 50)
    assert events(token, receipt, "Approval") == [
        {"owner": BUYER.address, "spender": MARKET.address, "value": 50}
    ]
    assert f.allowance(BUYER.address, MARKET.address).call() == 50

    receipt = send(ledger, MARKET, token, "transferFrom", BUYER.address, OWNER.address, 20)
    assert events(token, receipt, "Transfer") == [
        {"from": BUYER.address, "to": OWNER.address, "value": 20}
    ]
    assert f.allowance(BUYER.address, MARKET.address).call() == 30
    assert balances() == [start[0] - 50, start[1] + 30, start[2] + 20]

    # Beyond the allowance or the balance: refused, and nothing moves.
    with pytest.raises(InsufficientFunds, match="allowance"):
        send(ledger, MARKET, token, "transferFrom", BUYER.address, OWNER.address, 31)
    with pytest.raises(InsufficientFunds, match="balance"):
        send(ledger, BUYER, token, "transfer", OTHER.address, start[0] - 50 + 1)
    assert f.allowance(BUYER.address, MARKET.address).call() == 30
    assert balances() == [start[0] - 50, start[1] + 30, start[2] + 20]
    assert f.totalSupply().call() == supply


def test_market_orders_show_as_a_mint_and_a_burn_to_erc20_readers(ledger: Ledger) -> None:
    fund(ledger, BUYER.address)
    pub = publish(ledger)
    dt, mt = erc20(ledger, pub.datatoken), erc20(ledger, ledger.market_token.address)
    paid_before = mt.functions.balanceOf(BUYER.address).call()
    order = ledger.exchange.buy_and_order(BUYER, pub.dataset, ledger.datatoken(pub.dataset))
    receipt = receipt_of(ledger, order.tx.tx_hash)
    assert events(dt, receipt, "Transfer") == [
        {"from": ZERO, "to": BUYER.address, "value": 1},
        {"from": BUYER.address, "to": ZERO, "value": 1},
    ]
    assert dt.functions.totalSupply().call() == 0
    assert dt.functions.balanceOf(BUYER.address).call() == 0
    payments = events(mt, receipt, "Transfer")
    assert {p["from"] for p in payments} == {BUYER.address}
    assert sum(p["value"] for p in payments) == PRICE
    assert paid_before - mt.functions.balanceOf(BUYER.address).call() == PRICE


# -- EIP-2612 permit on datatoken clones ---------------------------------------------------

DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


def test_each_datatoken_clone_signs_permits_in_its_own_domain(ledger: Ledger) -> None:
    first, second = publish(ledger), publish(ledger)
    a, b = erc20(ledger, first.datatoken), erc20(ledger, second.datatoken)
    dt_a, dt_b = ledger.datatoken(first.dataset), ledger.datatoken(second.dataset)

    for clone in (a, b):
        _, name, version, chain_id, verifying, _, _ = clone.functions.eip712Domain().call()
        assert (chain_id, verifying) == (ledger.chain.chain_id, clone.address)
        expected = keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [DOMAIN_TYPEHASH, keccak(text=name), keccak(text=version), chain_id, verifying],
            )
        )
        assert clone.functions.DOMAIN_SEPARATOR().call() == expected
    assert a.functions.DOMAIN_SEPARATOR().call() != b.functions.DOMAIN_SEPARATOR().call()

    dt_a.mint(OWNER, BUYER.address, 3)
    deadline = ledger.chain.timestamp() + 3_600
    permit = dt_a.sign_permit(BUYER, MARKET.address, 2, deadline)

    # Signed for clone A, the permit means nothing to clone B.
    with pytest.raises(SignatureError):
        dt_b.permit(OTHER, permit)
    assert b.functions.allowance(BUYER.address, MARKET.address).call() == 0
    assert b.functions.nonces(BUYER.address).call() == 0

    # Anyone may submit it to A; the spender then moves the tokens with transferFrom.
    tx = dt_a.permit(OTHER, permit)
    assert events(a, receipt_of(ledger, tx.tx_hash), "Approval") == [
        {"owner": BUYER.address, "spender": MARKET.address, "value": 2}
    ]
    assert a.functions.allowance(BUYER.address, MARKET.address).call() == 2
    assert a.functions.nonces(BUYER.address).call() == 1
    with pytest.raises(SignatureError):
        dt_a.permit(OTHER, permit)  # its nonce is used: no replay
    send(ledger, MARKET, a, "transferFrom", BUYER.address, MARKET.address, 2)
    assert a.functions.balanceOf(BUYER.address).call() == 1
    assert a.functions.balanceOf(MARKET.address).call() == 2
    assert a.functions.allowance(BUYER.address, MARKET.address).call() == 0
