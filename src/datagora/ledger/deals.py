"""Typed wrapper of StorageDeals: paid storage deals and proofs of data possession.

The contract and its formats are described in ``docs/formats.md``, "Storage
deals and proofs of data possession"; the prover that answers challenges lives
in :mod:`datagora.storage.deals`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ContractWrapper, Tx, check_address, check_bytes32
from datagora.ledger.errors import InvalidArgument

__all__ = [
    "MAX_CHALLENGES",
    "Answer",
    "DealInfo",
    "DealLayout",
    "DealTerms",
    "PeriodState",
    "SlotInfo",
    "StorageDeals",
]

MAX_NODES = 16
MAX_CHALLENGES = 32


class PeriodState(enum.IntEnum):
    OPEN = 0
    PROVEN = 1
    MISSED = 2


@dataclass(frozen=True)
class DealLayout:
    """The dataset tree's shape, as the contract needs it to check block paths."""

    leaf_count: int
    last_from: int
    full_blocks: int
    last_blocks: int

    def blocks(self, leaf: int) -> int:
        """Blocks of the share at dataset-tree leaf ``leaf``."""
        return self.last_blocks if leaf >= self.last_from else self.full_blocks

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.leaf_count, self.last_from, self.full_blocks, self.last_blocks)


@dataclass(frozen=True)
class DealTerms:
    """What a deal pays and asks: price per period per node (market currency),
    collateral per node, slash per missed period, and the period schedule."""

    price: int
    collateral: int
    slash: int
    periods: int
    period_blocks: int
    grace_blocks: int
    challenges: int = 16

    def as_tuple(self) -> tuple[int, ...]:
        return (
            self.price,
            self.collateral,
            self.slash,
            self.periods,
            self.period_blocks,
            self.grace_blocks,
            self.challenges,
        )


@dataclass(frozen=True)
class DealInfo:
    deal: int
    owner: str
    dataset: int
    version: int
    root: bytes
    layout: DealLayout
    terms: DealTerms
    start: int
    end_period: int
    node_count: int

    def window_end(self, period: int) -> int:
        """The first block at which ``period`` can no longer be proven."""
        t = self.terms
        return self.start + (period + 1) * t.period_blocks + t.grace_blocks

    def seed_block(self, period: int) -> int:
        return self.start + period * self.terms.period_blocks


@dataclass(frozen=True)
class SlotInfo:
    node: str
    shares_root: bytes
    share_count: int
    joined: bool
    collateral: int
    proven: int
    missed: int
    earned: int
    settled: bool


@dataclass(frozen=True)
class Answer:
    """One challenge's answer: the block and its three audit paths."""

    entry: int
    leaf: int
    list_path: tuple[bytes, ...]
    data: bytes
    block_path: tuple[bytes, ...]
    share_path: tuple[bytes, ...]

    def as_tuple(self) -> tuple[object, ...]:
        return (
            self.entry,
            self.leaf,
            list(self.list_path),
            self.data,
            list(self.block_path),
            list(self.share_path),
        )


class StorageDeals(ContractWrapper):
    contract_name = "StorageDeals"

    def open_deal(
        self,
        account: LocalAccount,
        dataset: int,
        version: int,
        nodes: Sequence[tuple[str, bytes, int]],
        layout: DealLayout,
        terms: DealTerms,
    ) -> tuple[int, Tx]:
        """Open a deal (the dataset's controller only; escrow must be approved).
        ``nodes`` are (address, share-list root, share count). Returns its id."""
        if not 1 <= len(nodes) <= MAX_NODES:
            raise InvalidArgument("bad node count", f"a deal has 1..{MAX_NODES} nodes")
        if not 1 <= terms.challenges <= MAX_CHALLENGES:
            raise InvalidArgument(
                "bad challenge count", f"challenges per period are 1..{MAX_CHALLENGES}"
            )
        addresses = [check_address(a, "node") for a, _, _ in nodes]
        roots = [check_bytes32(r, "share list root") for _, r, _ in nodes]
        counts = [int(c) for _, _, c in nodes]
        receipt = self._transact(
            account,
            "open_deal",
            dataset,
            version,
            addresses,
            roots,
            counts,
            layout.as_tuple(),
            terms.as_tuple(),
        )
        (ev,) = self._decode(receipt, "DealOpened")
        return int(ev["deal"]), Tx.of(receipt)

    def join(self, account: LocalAccount, deal: int) -> Tx:
        """Post the deal's collateral (approve it first)."""
        return Tx.of(self._transact(account, "join", deal))

    def prove(self, account: LocalAccount, deal: int, period: int, answers: Sequence[Answer]) -> Tx:
        return Tx.of(
            self._transact(account, "prove", deal, period, [a.as_tuple() for a in answers])
        )

    def draw(self, account: LocalAccount, deal: int, period: int) -> Tx:
        return Tx.of(self._transact(account, "draw", deal, period))

    def slash_missed(self, account: LocalAccount, deal: int, node: str, period: int) -> Tx:
        return Tx.of(
            self._transact(account, "slash_missed", deal, check_address(node, "node"), period)
        )

    def settle(self, account: LocalAccount, deal: int, node: str) -> Tx:
        return Tx.of(self._transact(account, "settle", deal, check_address(node, "node")))

    def end_deal(self, account: LocalAccount, deal: int) -> Tx:
        return Tx.of(self._transact(account, "end_deal", deal))

    # -- views -------------------------------------------------------------------

    def deal_count(self) -> int:
        return int(self._view("deal_count"))

    def deal(self, deal: int) -> DealInfo:
        owner, dataset, version, root, layout, terms, start, end, count = self._view("deal", deal)
        return DealInfo(
            deal,
            str(owner),
            int(dataset),
            int(version),
            bytes(root),
            DealLayout(*(int(x) for x in layout)),
            DealTerms(*(int(x) for x in terms)),
            int(start),
            int(end),
            int(count),
        )

    def slot(self, deal: int, index: int) -> SlotInfo:
        return _slot(self._view("slot", deal, index))

    def slot_of(self, deal: int, node: str) -> SlotInfo:
        return _slot(self._view("slot_of", deal, check_address(node, "node")))

    def slots(self, deal: int) -> list[SlotInfo]:
        return [self.slot(deal, i) for i in range(self.deal(deal).node_count)]

    def state_of(self, deal: int, node: str, period: int) -> PeriodState:
        return PeriodState(int(self._view("state_of", deal, check_address(node, "node"), period)))

    def seed_of(self, deal: int, period: int) -> bytes:
        return bytes(self._view("seed_of", deal, period))

    def current_period(self, deal: int) -> int:
        return int(self._view("current_period", deal))

    def challenge(self, deal: int, node: str, period: int, index: int) -> tuple[int, int]:
        entry, selector = self._view("challenge", deal, node, period, index)
        return int(entry), int(selector)

    def registry(self) -> str:
        return str(self._view("REGISTRY"))

    def token(self) -> str:
        return str(self._view("TOKEN"))


def _slot(raw: Sequence[object]) -> SlotInfo:
    node, root, count, joined, collateral, proven, missed, earned, settled = raw
    return SlotInfo(
        str(node),
        bytes(root),  # type: ignore[call-overload]
        int(count),  # type: ignore[call-overload]
        bool(joined),
        int(collateral),  # type: ignore[call-overload]
        int(proven),  # type: ignore[call-overload]
        int(missed),  # type: ignore[call-overload]
        int(earned),  # type: ignore[call-overload]
        bool(settled),
    )
