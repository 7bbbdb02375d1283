"""Storage deals as an owner and a node use them: open one on a dataset's current
placement, end it, list what an owner pays and what a node earns.

The contract is :class:`datagora.ledger.deals.StorageDeals`; the share lists and
layout come from :mod:`datagora.storage.deals`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datagora.errors import ConfigError
from datagora.ledger.deals import DealInfo, DealTerms, SlotInfo, StorageDeals
from datagora.market.errors import DealError
from datagora.storage.deals import (
    DealProver,
    deal_layout,
    detection_probability,
    disk_reader,
    share_lists,
)

if TYPE_CHECKING:
    from pathlib import Path

    from eth_account.signers.local import LocalAccount

    from datagora.ledger.base import Tx
    from datagora.market.flows import Marketplace
    from datagora.storage.manifest import VerifiedManifest

__all__ = [
    "DealSummary",
    "deal_summaries",
    "end_deal",
    "node_earnings",
    "node_prover",
    "open_deal",
]


def _deals(m: Marketplace) -> StorageDeals:
    if m.ledger.deals is None:
        raise ConfigError(
            "this deployment has no StorageDeals contract: redeploy (datagora chain deploy)"
        )
    return m.ledger.deals


@dataclass(frozen=True)
class DealSummary:
    """One deal as its owner sees it."""

    info: DealInfo
    slots: tuple[SlotInfo, ...]

    @property
    def escrowed(self) -> int:
        t = self.info.terms
        return t.price * t.periods * self.info.node_count

    @property
    def paid(self) -> int:
        return sum(s.earned for s in self.slots)

    @property
    def owed(self) -> int:
        """Still in escrow for periods not yet proven, missed or refunded."""
        t = self.info.terms
        done = sum(s.proven + s.missed for s in self.slots)
        return t.price * (self.info.end_period * self.info.node_count - done)

    def to_json(self) -> dict[str, Any]:
        """Amounts in base units as decimal strings (``docs/cli.md``)."""
        i, t = self.info, self.info.terms
        return {
            "deal": i.deal,
            "dataset": i.dataset,
            "version": i.version,
            "owner": i.owner,
            "price_per_period": str(t.price),
            "periods": t.periods,
            "end_period": i.end_period,
            "period_blocks": t.period_blocks,
            "challenges": t.challenges,
            "escrowed": str(self.escrowed),
            "paid": str(self.paid),
            "owed": str(self.owed),
            "detect_p_1pct": round(detection_probability(0.01, t.challenges, t.periods), 4),
            "nodes": [
                {
                    "node": s.node,
                    "joined": s.joined,
                    "proven": s.proven,
                    "missed": s.missed,
                    "earned": str(s.earned),
                    "collateral": str(s.collateral),
                    "shares": s.share_count,
                }
                for s in self.slots
            ],
        }


def open_deal(
    m: Marketplace, dataset: int, nodes: Mapping[str, str], terms: DealTerms
) -> tuple[int, Tx]:
    """Open a deal paying the storage nodes ``nodes`` (URL -> account address) for
    the shares the dataset's current placement puts on them; approves the escrow."""
    deals = _deals(m)
    info = m.dataset_info(dataset)
    client = m.storage()
    verified = client.fetch_manifest(info.manifest_hash)
    placement = client.fetch_placement(verified)
    if placement is None:
        raise DealError(f"no placement record for dataset {dataset} on the storage nodes")
    lists = share_lists(verified, placement.locations)
    chosen = []
    for url, address in nodes.items():
        found = lists.get(url)
        if found is None:
            raise DealError(f"{url} holds no share of dataset {dataset}'s current version")
        chosen.append((address, found.root, found.count))
    owner = m.identity.account
    escrow = terms.price * terms.periods * len(chosen)
    if escrow:
        m.ledger.market_token.approve(owner, deals.address, escrow)
    return deals.open_deal(owner, dataset, info.version, chosen, deal_layout(verified), terms)


def end_deal(m: Marketplace, deal: int) -> Tx:
    """End a deal as its owner: periods not started are refunded."""
    return _deals(m).end_deal(m.identity.account, deal)


def deal_summaries(m: Marketplace, owner: str | None = None) -> list[DealSummary]:
    """Every deal (of ``owner``, if given), oldest first."""
    deals = _deals(m)
    out = []
    for deal in range(1, deals.deal_count() + 1):
        info = deals.deal(deal)
        if owner is None or info.owner.lower() == owner.lower():
            out.append(DealSummary(info, tuple(deals.slots(deal))))
    return out


def node_earnings(m: Marketplace, node: str) -> list[dict[str, Any]]:
    """What ``node`` earned, proved and lost in each deal it is part of (amounts in
    base units, as decimal strings like every amount in ``--json``)."""
    out = []
    for summary in deal_summaries(m):
        for slot in summary.slots:
            if slot.node.lower() == node.lower():
                t = summary.info.terms
                out.append(
                    {
                        "deal": summary.info.deal,
                        "dataset": summary.info.dataset,
                        "joined": slot.joined,
                        "proven": slot.proven,
                        "missed": slot.missed,
                        "earned": str(slot.earned),
                        "slashed": str(slot.missed * t.slash if slot.joined else 0),
                        "collateral_held": str(slot.collateral),
                        "periods_left": max(0, summary.info.end_period - slot.proven - slot.missed),
                    }
                )
    return out


def node_prover(m: Marketplace, data_dir: Path, account: LocalAccount) -> DealProver:
    """A prover for the storage node whose data directory is ``data_dir`` (read
    only) acting as ``account``; manifests come from that disk, else the network."""
    from datagora.storage.errors import ManifestError
    from datagora.storage.manifest import verify_manifest

    deals = _deals(m)
    read, holds = disk_reader(data_dir)
    cache: dict[bytes, VerifiedManifest] = {}

    def manifest(info: DealInfo) -> VerifiedManifest:
        digest = m.dataset_info(info.dataset).manifest_hash
        if digest not in cache:
            raw = read(digest)
            try:
                if raw is None:
                    raise ManifestError("not on this node")
                cache[digest] = verify_manifest(raw, digest)
            except ManifestError:
                cache[digest] = m.storage().fetch_manifest(digest)
        return cache[digest]

    return DealProver(deals, account, read, manifest, holds)
