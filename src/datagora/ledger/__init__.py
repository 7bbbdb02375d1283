"""The ledger layer: datagora's Vyper contracts and a typed client for them."""

from datagora.ledger.access import (
    AccessLog,
    AccessRegistry,
    AccessRequest,
    ListKind,
    LogAnchor,
    RequestStatus,
)
from datagora.ledger.base import Tx
from datagora.ledger.chain import (
    BlockHeader,
    Chain,
    EmbeddedChain,
    Log,
    PendingTx,
    RpcChain,
    dev_account,
)
from datagora.ledger.compute import ComputeRegistry, JobRecord, JobStatus
from datagora.ledger.datasets import (
    DAY_SECONDS,
    DataNFT,
    DatasetInfo,
    DatasetState,
    Factory,
    Pricing,
    Published,
    PublishParams,
)
from datagora.ledger.deployment import Deployment, deploy_contracts
from datagora.ledger.events import Event, EventReader
from datagora.ledger.ledger import Ledger
from datagora.ledger.market import Dispenser, FixedRateExchange, Quote
from datagora.ledger.records import (
    CiphertextStore,
    KeyRecord,
    KeyValueStore,
    MerkleVerifier,
    StorageLog,
)
from datagora.ledger.registry import NodeInfo, NodeRegistry, NodeState, Role
from datagora.ledger.tokens import Datatoken, MarketToken, Order, Permit

__all__ = [
    "DAY_SECONDS",
    "AccessLog",
    "AccessRegistry",
    "AccessRequest",
    "BlockHeader",
    "Chain",
    "CiphertextStore",
    "ComputeRegistry",
    "DataNFT",
    "DatasetInfo",
    "DatasetState",
    "Datatoken",
    "Deployment",
    "Dispenser",
    "EmbeddedChain",
    "Event",
    "EventReader",
    "Factory",
    "FixedRateExchange",
    "JobRecord",
    "JobStatus",
    "KeyRecord",
    "KeyValueStore",
    "Ledger",
    "ListKind",
    "Log",
    "LogAnchor",
    "MarketToken",
    "MerkleVerifier",
    "NodeInfo",
    "NodeRegistry",
    "NodeState",
    "Order",
    "PendingTx",
    "Permit",
    "Pricing",
    "PublishParams",
    "Published",
    "Quote",
    "RequestStatus",
    "Role",
    "RpcChain",
    "StorageLog",
    "Tx",
    "deploy_contracts",
    "dev_account",
]
