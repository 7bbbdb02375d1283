"""Finding the network's nodes on chain: storage, proxies and compute from the NodeRegistry.

A market given no storage nodes (no proxies, no compute node) reads the active,
staked nodes of that role from the registry; an explicit list is used as given
(tests, a private network). A node that left, withdrew or fell below its minimum
stake is not listed, so it is never used.
"""

from __future__ import annotations

from dataclasses import replace

from datagora.ledger import Ledger, NodeInfo, Role
from datagora.market.flows import Endpoints

__all__ = ["discover", "registry_compute_node"]


def discover(ledger: Ledger, endpoints: Endpoints, account: str | None = None) -> Endpoints:
    """`endpoints` with each empty role filled from `ledger`'s registry.

    The compute node, when none is named, is the one that computes on a dataset
    (registered by its controller or an operator the controller named); where no
    dataset is meant, `account`'s own compute node, else the first registered.
    """
    compute = endpoints.compute
    router = endpoints.compute_router
    wanted = not endpoints.storage or not endpoints.proxies or (compute is None and router is None)
    active = ledger.registry.nodes() if wanted else []

    def of(role: Role) -> list[NodeInfo]:
        return [n for n in active if role in n.roles]

    storage = endpoints.storage or [n.endpoint for n in of(Role.STORAGE)]
    proxies = endpoints.proxies or [n.endpoint for n in of(Role.PROXY)]
    if compute is None and router is None:
        nodes = of(Role.COMPUTE)
        own = [n for n in nodes if account is not None and n.address == account]
        compute = (own or nodes)[0].endpoint if nodes else None
        if nodes:
            router = _Router(ledger, compute)
    if (storage, proxies, compute, router) == (
        endpoints.storage,
        endpoints.proxies,
        endpoints.compute,
        endpoints.compute_router,
    ):
        return endpoints
    threshold = endpoints.threshold
    if not endpoints.proxies and len(proxies) > 1:
        # The default threshold was set for no proxies (1); the registry's several
        # proxies default to 2, as Endpoints would (1 of several is refused).
        threshold = max(threshold, 2)
    return replace(
        endpoints,
        storage=storage,
        proxies=proxies,
        threshold=threshold,
        compute=compute,
        compute_router=router,
    )


def registry_compute_node(ledger: Ledger, dataset: int) -> NodeInfo | None:
    """The active compute node registered by `dataset`'s controller or by an operator
    it named in the ComputeRegistry, or None."""
    controller = ledger.data_nft.controller(dataset)
    for node in ledger.registry.nodes(Role.COMPUTE):
        if node.address == controller or ledger.compute.is_operator(dataset, node.address):
            return node
    return None


class _Router:
    """Endpoints.compute_router over the registry (falls back to `default`)."""

    def __init__(self, ledger: Ledger, default: str | None) -> None:
        self.ledger = ledger
        self.default = default

    def __call__(self, dataset: int) -> str:
        node = registry_compute_node(self.ledger, dataset)
        if node is not None:
            return node.endpoint
        if self.default is None:
            from datagora.errors import ConfigError

            raise ConfigError(f"no registered compute node computes on dataset {dataset}")
        return self.default
