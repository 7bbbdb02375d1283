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
    placement_share_lists,
)

if TYPE_CHECKING:
    from pathlib import Path

    from eth_account.signers.local import LocalAccount

    from datagora.ledger.base import Tx
    from datagora.market.flows import Marketplace
    from datagora.storage.manifest import VerifiedManifest
    from datagora.storage.placement import PlacementRecord

__all__ = [
    "DealSummary",
    "DealTrouble",
    "Rebuilt",
    "deal_summaries",
    "end_deal",
    "node_earnings",
    "node_prover",
    "open_deal",
    "rebuild_away",
    "record_rebuilt",
    "repair_deals",
    "troubled_deals",
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
    lists = placement_share_lists(verified, placement)
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


def _holding(record: PlacementRecord | None) -> set[str]:
    """The locations a placement record puts any share on."""
    if record is None:
        return set()
    if record.format_version == 2:
        return {u.rstrip("/") for u in record.nodes}
    return {u.rstrip("/") for where in record.locations.values() for u in where}


def _moved(after: PlacementRecord, before: PlacementRecord | None, bad: set[str]) -> set[str]:
    """The locations now holding shares that ``before`` put on a ``bad`` node."""
    if before is None:
        return set()
    if after.format_version == 2 and before.format_version == 2:
        leaves = range(len(after.holders) // 2)
        return {
            loc.rstrip("/")
            for leaf in leaves
            if {u.rstrip("/") for u in before.where_leaf(leaf)} & bad
            for loc in after.where_leaf(leaf)
        }
    return {
        loc.rstrip("/")
        for share, where in after.locations.items()
        if {u.rstrip("/") for u in before.where(share)} & bad
        for loc in where
    }


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


@dataclass(frozen=True)
class DealTrouble:
    """A node of a deal its owner should repair away from: it missed a period (slashed
    or not yet), or it is leaving or gone from the NodeRegistry."""

    deal: int
    dataset: int
    node: str
    endpoint: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "deal": self.deal,
            "dataset": self.dataset,
            "node": self.node,
            "endpoint": self.endpoint,
            "reason": self.reason,
        }


def troubled_deals(m: Marketplace, owner: str | None = None) -> list[DealTrouble]:
    """The nodes of running deals (of ``owner``) that missed a period (marked on
    chain, or past its proof window and still open) or left the registry."""
    from datagora.ledger.deals import PeriodState
    from datagora.ledger.errors import NotFound
    from datagora.ledger.registry import NodeState, Role

    deals = _deals(m)
    registry = m.ledger.registry
    now = m.ledger.chain.block_number
    out = []
    for summary in deal_summaries(m, owner):
        info = summary.info
        if info.end_period == 0 or now >= info.window_end(info.end_period - 1):
            continue  # over: nothing left to keep
        closed = [p for p in range(info.end_period) if now >= info.window_end(p)][
            -2:
        ]  # the last two periods whose proof window closed
        for slot in summary.slots:
            if slot.settled:
                continue
            reasons = []
            try:
                record = registry.node(slot.node)
                endpoint: str | None = record.endpoint
                if record.state is not NodeState.ACTIVE or not record.has(Role.STORAGE):
                    reasons.append(f"{record.state.name.lower()} in the registry")
            except NotFound:
                endpoint = None
                reasons.append("not registered")
            if slot.missed:
                reasons.append(f"slashed for {slot.missed} missed period(s)")
            elif slot.joined and any(
                deals.state_of(info.deal, slot.node, p) is PeriodState.OPEN for p in closed
            ):
                reasons.append("missed a period (not yet slashed)")
            elif not slot.joined and closed:
                reasons.append("never joined")
            if reasons:
                out.append(
                    DealTrouble(info.deal, info.dataset, slot.node, endpoint, "; ".join(reasons))
                )
    return out


@dataclass(frozen=True)
class Rebuilt:
    """A dataset's shares moved off troubled deal nodes (:func:`rebuild_away`)."""

    dataset: int
    manifest_hash: bytes
    rebuilt: int
    healthy: bool
    placement_hash: bytes | None
    moved_to: Mapping[str, str]
    """Registered storage nodes (URL -> account) now holding the shares the troubled
    nodes held."""


def rebuild_away(
    m: Marketplace,
    dataset: int,
    troubled: Mapping[str, str | None],
    prefer_fresh: bool = False,
) -> Rebuilt:
    """Rebuild the shares of ``dataset``'s current version that the ``troubled`` nodes
    (account -> endpoint, None if unknown) hold onto other registered, active storage
    nodes and write the new placement record (as this marketplace's account, the
    controller). The troubled nodes are still read (a slashed or leaving node may
    serve its shares: they help rebuild), never written to. With ``prefer_fresh`` the
    rebuilt shares go to nodes holding nothing of the dataset yet (so a new deal can
    pay them for exactly what they were given) when that restores every chunk, else
    to any other healthy node (redundancy first)."""
    from datagora.ledger.registry import Role
    from datagora.storage.client import StorageClient
    from datagora.storage.errors import RepairError
    from datagora.storage.repair import Repairer

    bad = {u.rstrip("/") for u in troubled.values() if u}
    bad_nodes = {a.lower() for a in troubled}
    registered = {
        n.endpoint.rstrip("/"): n.address
        for n in m.ledger.registry.nodes(Role.STORAGE)
        if n.address.lower() not in bad_nodes
    }
    known = [u.rstrip("/") for u in m.endpoints.storage]
    nodes = list(dict.fromkeys([*known, *registered, *sorted(bad)]))
    info = m.dataset_info(dataset)
    client = StorageClient(nodes, signer=m.identity.account)
    before = client.fetch_placement(client.fetch_manifest(info.manifest_hash))
    holding = _holding(before)
    if before is not None and not holding & bad:
        # Nothing of it on the troubled nodes (moved already): nothing to rebuild.
        return Rebuilt(dataset, info.manifest_hash, 0, True, before.digest(), {})
    if not [u for u in nodes if u not in bad]:
        raise DealError(f"dataset {dataset}: no storage node is left to repair onto")
    fresh = {u for u in registered if u not in holding} if prefer_fresh else set()
    report = None
    first = 0
    if fresh:
        try:
            report = Repairer(nodes, signer=m.identity.account, avoid=bad, place_on=fresh).repair(
                info.manifest_hash
            )
        except RepairError as exc:  # the fresh nodes alone could not take every chunk's shares
            first = getattr(exc.report, "rebuilt", 0)
    if report is None:
        report = Repairer(nodes, signer=m.identity.account, avoid=bad).repair(info.manifest_hash)
        report.rebuilt += first
    moved: dict[str, str] = {}
    if report.rebuilt and report.placement is not None:
        for url in _moved(report.placement, before, bad):
            if url in registered:
                moved[url] = registered[url]
    return Rebuilt(
        dataset,
        info.manifest_hash,
        report.rebuilt,
        report.healthy,
        report.placement_hash,
        dict(sorted(moved.items())),
    )


def record_rebuilt(m: Marketplace, rebuilt: Rebuilt) -> Tx:
    """Record a repair on chain (``StorageLog.record_repair``, the controller only)."""
    if rebuilt.placement_hash is None:
        raise DealError(f"dataset {rebuilt.dataset}: the repair wrote no placement record")
    return m.ledger.storage_log.record_repair(
        m.identity.account,
        rebuilt.dataset,
        rebuilt.manifest_hash,
        rebuilt.placement_hash,
        rebuilt.rebuilt,
    )


def repair_deals(
    m: Marketplace,
    owner: str | None = None,
    replacement: DealTerms | None = None,
    record: bool = True,
    replace: bool = False,
) -> list[dict[str, Any]]:
    """Repair each dataset with a troubled deal node onto the other storage nodes
    (the troubled nodes are left out: the shares they hold are rebuilt elsewhere),
    record the repair on chain, and with ``replacement`` terms open a new deal
    paying the nodes that now hold the shares the troubled nodes held (``replace``
    without terms: the troubled deal's own terms). Acts as this marketplace's
    account (the datasets' controller)."""
    owner = owner or m.identity.address
    troubles = troubled_deals(m, owner)
    by_dataset: dict[int, list[DealTrouble]] = {}
    for t in troubles:
        by_dataset.setdefault(t.dataset, []).append(t)
    results = []
    for dataset, found in sorted(by_dataset.items()):
        done = rebuild_away(m, dataset, {t.node: t.endpoint for t in found})
        row: dict[str, Any] = {
            "dataset": dataset,
            "deals": sorted({t.deal for t in found}),
            "left_out": sorted(t.node for t in found),
            "rebuilt": done.rebuilt,
            "healthy": done.healthy,
            "recorded_tx": None,
            "replacement_deal": None,
        }
        if record and done.rebuilt and done.placement_hash is not None:
            row["recorded_tx"] = record_rebuilt(m, done).tx_hash
        terms = replacement
        if terms is None and replace:
            terms = _deals(m).deal(found[0].deal).terms
        if terms is not None and done.rebuilt and done.moved_to:
            deal, _ = open_deal(m, dataset, done.moved_to, terms)
            row["replacement_deal"] = deal
        results.append(row)
    return results
