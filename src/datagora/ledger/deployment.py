"""Deploying datagora's contracts, and the JSON record other processes read to connect."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from datagora.atomic import write_atomically
from datagora.errors import ConfigError
from datagora.ledger.chain import Chain
from datagora.ledger.compiler import CONTRACT_NAMES, compile_contract
from datagora.ledger.registry import DEFAULT_MIN_STAKE, DEFAULT_UNBONDING_DELAY

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

DEPLOYMENT_FORMAT = 1


@dataclass(frozen=True)
class Deployment:
    """Where datagora lives on one chain: chain id, contract addresses, start block."""

    chain_id: int
    start_block: int
    deployer: str
    contracts: dict[str, str]
    format: int = DEPLOYMENT_FORMAT
    compiler: str = field(default="")
    currency: str = field(default="")
    """An existing ERC-20 used as the market currency (its address is also
    ``contracts["MarketToken"]``); empty: datagora's own MarketToken."""

    def address(self, name: str) -> str:
        try:
            return self.contracts[name]
        except KeyError:
            raise ConfigError(f"the deployment record has no {name} contract") from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a record."""
        write_atomically(path, self.to_json())

    @classmethod
    def from_json(cls, text: str, source: str = "deployment record") -> Deployment:
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != DEPLOYMENT_FORMAT:
            raise ConfigError(f"{source}: unknown format (expected format {DEPLOYMENT_FORMAT})")
        try:
            contracts = {str(k): str(v) for k, v in data["contracts"].items()}
            missing = [n for n in CONTRACT_NAMES if n not in contracts]
            if missing:
                raise ConfigError(f"{source}: missing contracts {', '.join(missing)}")
            return cls(
                chain_id=int(data["chain_id"]),
                start_block=int(data["start_block"]),
                deployer=str(data["deployer"]),
                contracts=contracts,
                compiler=str(data.get("compiler", "")),
                currency=str(data.get("currency", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: malformed ({exc})") from None

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read deployment record {path}: {exc.strerror}") from None
        return cls.from_json(text, str(path))


def deploy_contracts(
    chain: Chain,
    deployer: LocalAccount,
    protocol_fee_bps: int = 10,
    protocol_fee_recipient: str | None = None,
    unbonding_delay: int = DEFAULT_UNBONDING_DELAY,
    min_stake: int = DEFAULT_MIN_STAKE,
    currency: str | None = None,
) -> Deployment:
    """Deploy every contract, wire them together and return the deployment record.

    The NodeRegistry stakes in the market currency: each role's minimum stake is
    `min_stake`, and a leaving node unbonds for `unbonding_delay` seconds.
    `currency`: an existing ERC-20 (a stablecoin, an OCEAN-like token) to use as the
    market currency instead of deploying datagora's own MarketToken; with or without
    EIP-2612 permit (without, buying falls back to an allowance)."""
    import vyper

    start_block = chain.block_number + 1

    def deploy(name: str, *args: Any) -> str:
        compiled = compile_contract(name)
        return chain.deploy(deployer, compiled.abi, compiled.bytecode, *args)

    fee_recipient = protocol_fee_recipient or deployer.address
    c: dict[str, str] = {}
    if currency:
        c["MarketToken"] = _check_currency(chain, currency)
    else:
        c["MarketToken"] = deploy("MarketToken", "datagora Market Token", "DGM")
    c["DataNFT"] = deploy("DataNFT")
    c["FixedRateExchange"] = deploy(
        "FixedRateExchange", c["MarketToken"], c["DataNFT"], protocol_fee_bps, fee_recipient
    )
    c["Dispenser"] = deploy("Dispenser", c["DataNFT"])
    c["Datatoken"] = deploy("Datatoken", c["DataNFT"], c["FixedRateExchange"], c["Dispenser"])
    c["Factory"] = deploy(
        "Factory", c["DataNFT"], c["Datatoken"], c["FixedRateExchange"], c["Dispenser"]
    )
    c["AccessRegistry"] = deploy("AccessRegistry", c["DataNFT"])
    c["KeyValueStore"] = deploy("KeyValueStore")
    c["CiphertextStore"] = deploy("CiphertextStore", c["DataNFT"])
    c["MerkleVerifier"] = deploy("MerkleVerifier", c["DataNFT"])
    c["AccessLog"] = deploy("AccessLog")
    c["ComputeRegistry"] = deploy("ComputeRegistry", c["DataNFT"], c["MarketToken"])
    c["NodeRegistry"] = deploy("NodeRegistry", c["MarketToken"], unbonding_delay)
    c["StorageLog"] = deploy("StorageLog", c["DataNFT"], c["NodeRegistry"])
    # Optional (records made before it existed lack it): proxies batch their views.
    c["ViewBatch"] = deploy("ViewBatch")
    # Slashes a node's registry stake too (the registry approves it as a slasher below).
    c["StorageDeals"] = deploy("StorageDeals", c["MarketToken"], c["DataNFT"], c["NodeRegistry"])
    # Optional too: a dataset's proxies and threshold, chosen by its controller.
    c["ProxySets"] = deploy("ProxySets", c["DataNFT"], c["NodeRegistry"])
    # Optional: reports of proxies' bad signed answers; slashes once the owner confirms.
    c["ProxyFaults"] = deploy("ProxyFaults", c["DataNFT"], c["NodeRegistry"])
    nft = chain.w3.eth.contract(address=c["DataNFT"], abi=compile_contract("DataNFT").abi)  # type: ignore[call-overload]
    chain.transact(
        deployer,
        {"to": c["DataNFT"], "data": nft.encode_abi("set_factory", args=[c["Factory"]])},
        "DataNFT.set_factory",
    )
    chain.transact(
        deployer,
        {
            "to": c["DataNFT"],
            "data": nft.encode_abi("set_access_registry", args=[c["AccessRegistry"]]),
        },
        "DataNFT.set_access_registry",
    )
    registry = chain.w3.eth.contract(  # type: ignore[call-overload]
        address=c["NodeRegistry"], abi=compile_contract("NodeRegistry").abi
    )
    # Storage deals slash a node's registry stake beyond its deal collateral.
    chain.transact(
        deployer,
        {
            "to": c["NodeRegistry"],
            "data": registry.encode_abi("set_slasher", args=[c["StorageDeals"], True]),
        },
        "NodeRegistry.set_slasher",
    )
    chain.transact(
        deployer,
        {
            "to": c["NodeRegistry"],
            "data": registry.encode_abi("set_slasher", args=[c["ProxyFaults"], True]),
        },
        "NodeRegistry.set_slasher",
    )
    if min_stake:
        for role in (1, 2, 4):
            chain.transact(
                deployer,
                {
                    "to": c["NodeRegistry"],
                    "data": registry.encode_abi("set_min_stake", args=[role, min_stake]),
                },
                "NodeRegistry.set_min_stake",
            )
    return Deployment(
        chain_id=chain.chain_id,
        start_block=start_block,
        deployer=deployer.address,
        contracts=c,
        compiler=f"vyper {vyper.__version__}",
        currency=c["MarketToken"] if currency else "",
    )


def _check_currency(chain: Chain, address: str) -> str:
    """`address` if it holds an ERC-20 (code, and its decimals, totalSupply and balanceOf
    answer); else ConfigError, before anything is deployed."""
    from web3 import Web3

    from datagora.errors import DatagoraError

    if not Web3.is_address(address):
        raise ConfigError(f"--currency {address!r} is not an address")
    token = Web3.to_checksum_address(address)
    if not chain.code_at(token):
        raise ConfigError(f"there is no contract at {token} on chain {chain.chain_id}")
    erc20 = chain.w3.eth.contract(address=token, abi=compile_contract("PlainToken").abi)  # type: ignore[call-overload]
    try:
        chain.call(erc20.functions.decimals(), "currency.decimals")
        chain.call(erc20.functions.totalSupply(), "currency.totalSupply")
        chain.call(erc20.functions.balanceOf(token), "currency.balanceOf")
    except DatagoraError:
        raise ConfigError(f"the contract at {token} does not answer as an ERC-20") from None
    return str(token)
