"""The :class:`Ledger`: a chain, a deployment and one typed wrapper per contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from eth_account.signers.local import LocalAccount

from datagora.errors import ConfigError
from datagora.ledger.access import AccessLog, AccessRegistry
from datagora.ledger.chain import Chain, dev_account
from datagora.ledger.compute import ComputeRegistry
from datagora.ledger.datasets import DataNFT, Factory
from datagora.ledger.deals import StorageDeals
from datagora.ledger.deployment import Deployment, deploy_contracts
from datagora.ledger.events import Event, EventReader
from datagora.ledger.market import Dispenser, FixedRateExchange
from datagora.ledger.proxysets import ProxyFaults, ProxySets
from datagora.ledger.records import CiphertextStore, KeyValueStore, MerkleVerifier, StorageLog
from datagora.ledger.registry import DEFAULT_UNBONDING_DELAY, NodeRegistry
from datagora.ledger.tokens import Datatoken, MarketToken


class Ledger:
    """datagora's contracts on one chain.

    >>> ledger = Ledger.embedded()          # in-process chain, contracts deployed
    >>> ledger = Ledger.connect("http://127.0.0.1:8545", Path("deployment.json"))
    """

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        if deployment.chain_id != chain.chain_id:
            raise ConfigError(
                f"the deployment record is for chain {deployment.chain_id}, "
                f"but the node serves chain {chain.chain_id}"
            )
        self.chain = chain
        self.deployment = deployment
        a = deployment.address
        for name in ("Factory", "DataNFT", "MarketToken"):
            if not chain.code_at(a(name)):
                raise ConfigError(f"no {name} contract at {a(name)} on this chain: redeploy")
        self.market_token = MarketToken(chain, a("MarketToken"))
        self.data_nft = DataNFT(chain, a("DataNFT"))
        self.factory = Factory(chain, a("Factory"), self.data_nft)
        self.exchange = FixedRateExchange(chain, a("FixedRateExchange"), self.market_token)
        self.dispenser = Dispenser(chain, a("Dispenser"))
        self.access = AccessRegistry(chain, a("AccessRegistry"))
        self.kv = KeyValueStore(chain, a("KeyValueStore"))
        self.ciphertexts = CiphertextStore(chain, a("CiphertextStore"))
        self.merkle = MerkleVerifier(chain, a("MerkleVerifier"))
        self.access_log = AccessLog(chain, a("AccessLog"))
        self.compute = ComputeRegistry(chain, a("ComputeRegistry"))
        self.storage_log = StorageLog(chain, a("StorageLog"))
        self.registry = NodeRegistry(chain, a("NodeRegistry"))
        # Optional: deployment records made before storage deals lack it.
        deals = deployment.contracts.get("StorageDeals")
        self.deals = None if deals is None else StorageDeals(chain, deals)
        # Optional: records made before datasets chose their proxies on chain lack it.
        proxy_sets = deployment.contracts.get("ProxySets")
        self.proxy_sets = None if proxy_sets is None else ProxySets(chain, proxy_sets)
        faults = deployment.contracts.get("ProxyFaults")
        self.proxy_faults = None if faults is None else ProxyFaults(chain, faults)

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        deployer: LocalAccount,
        protocol_fee_bps: int = 10,
        unbonding_delay: int = DEFAULT_UNBONDING_DELAY,
        currency: str | None = None,
    ) -> Ledger:
        """Deploy a fresh set of contracts on `chain` (a leaving node of its NodeRegistry
        unbonds for `unbonding_delay` seconds; the existing ERC-20 at `currency` is the
        market currency, if given)."""
        return cls(
            chain,
            deploy_contracts(
                chain,
                deployer,
                protocol_fee_bps,
                unbonding_delay=unbonding_delay,
                currency=currency,
            ),
        )

    @classmethod
    def embedded(cls) -> Ledger:
        """A fresh in-process chain with the contracts deployed by development account 0."""
        return cls.deploy(Chain.embedded(), dev_account(0))

    @classmethod
    def connect(cls, url: str, deployment: Deployment | Path) -> Ledger:
        """Connect to contracts already deployed on the chain at `url`."""
        record = deployment if isinstance(deployment, Deployment) else Deployment.load(deployment)
        return cls(Chain.rpc(url), record)

    def datatoken(self, dataset: int) -> Datatoken:
        """The datatoken of `dataset`, as registered by the data NFT (never another clone)."""
        return Datatoken(self.chain, self.data_nft.datatoken_of(dataset))

    def events(self, start: int | None = None, end: int | None = None) -> Iterator[Event]:
        """Every datagora event from `start` (default: the deployment's start block)."""
        reader = EventReader(self.chain, self.deployment.contracts)
        return reader.read(self.deployment.start_block if start is None else start, end)
