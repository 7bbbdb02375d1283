"""The market layer: the flows people use — publish, buy, request, grant, download."""

from datagora.market.discovery import discover
from datagora.market.flows import Endpoints, Marketplace, PublishedDataset

__all__ = ["Endpoints", "Marketplace", "PublishedDataset", "discover"]
