"""Sharing over the network: proxies that re-encrypt data keys for consumers the ledger
allows, the owner's agent that delegates key fragments to them, and the consumer's
fetch of a data key from ``threshold`` of them. See ``docs/sharing.md``.
"""

from datagora.sharing.agent import Agent, Delegation, create_agent_app, delegate, write_policies
from datagora.sharing.consumer import (
    FetchReport,
    fetch_data_key,
    fetch_data_key_report,
    report_fault,
)
from datagora.sharing.errors import (
    AccessRefused,
    DatasetInactive,
    DelegateRevoked,
    DelegationFailed,
    DenyListed,
    ExpiredOrder,
    ForgedFragment,
    GrantExpired,
    GrantRevoked,
    KfragRefused,
    NoKeyFragment,
    NoOrder,
    NotEnoughProxies,
    ProxyUnavailable,
    RequestDenied,
    RequestPending,
    SharingError,
    SignatureRefused,
)
from datagora.sharing.proxy import create_proxy_app

__all__ = [
    "AccessRefused",
    "Agent",
    "DatasetInactive",
    "DelegateRevoked",
    "Delegation",
    "DelegationFailed",
    "DenyListed",
    "ExpiredOrder",
    "FetchReport",
    "ForgedFragment",
    "GrantExpired",
    "GrantRevoked",
    "KfragRefused",
    "NoKeyFragment",
    "NoOrder",
    "NotEnoughProxies",
    "ProxyUnavailable",
    "RequestDenied",
    "RequestPending",
    "SharingError",
    "SignatureRefused",
    "create_agent_app",
    "create_proxy_app",
    "delegate",
    "fetch_data_key",
    "fetch_data_key_report",
    "report_fault",
    "write_policies",
]
