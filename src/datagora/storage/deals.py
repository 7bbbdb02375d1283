"""Storage deals from the storage side: the deal layout of a manifest, share lists,
challenges, the prover that answers them, and the detection arithmetic.

The on-chain rules are in ``docs/formats.md``, "Storage deals and proofs of data
possession"; this module computes exactly what ``StorageDeals.vy`` checks, so a
node can (1) check a deal's commitments against the manifest before it posts
collateral and (2) answer each period's challenges from the shares it holds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from datagora.ledger.deals import Answer, DealInfo, DealLayout, StorageDeals
from datagora.storage.blocks import BLOCK_SIZE, block_count, block_proof
from datagora.storage.errors import IntegrityError, StorageError
from datagora.storage.manifest import VerifiedManifest, local_chunk_records, local_leaf_proof
from datagora.storage.merkle import MerkleTree
from datagora.storage.placement import POSITIONAL_VERSION, PlacementRecord, holder_ids
from datagora.storage.shares import SHARE_HEADER_SIZE

__all__ = [
    "DEFAULT_CHALLENGES",
    "DealProver",
    "DealQuotas",
    "DealWatcher",
    "ShareList",
    "challenge_indexes",
    "deal_bytes",
    "deal_layout",
    "detection_probability",
    "disk_reader",
    "periods_to_detect",
    "placement_share_lists",
    "share_lists",
]

DEFAULT_CHALLENGES = 16
_log = logging.getLogger(__name__)


def detection_probability(lost: float, challenges: int, periods: int) -> float:
    """Chance that a node missing a fraction ``lost`` of its blocks fails at least
    one of ``challenges`` uniformly drawn blocks in ``periods`` periods:
    ``1 - (1 - lost) ** (challenges * periods)``."""
    if not 0.0 <= lost <= 1.0:
        raise ValueError("lost is a fraction in 0..1")
    return 1.0 - (1.0 - lost) ** (challenges * periods)


def periods_to_detect(lost: float, challenges: int, confidence: float = 0.99) -> int:
    """Periods after which such a node is caught with probability ``confidence``."""
    if not 0.0 < lost < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError("lost and confidence are fractions strictly between 0 and 1")
    return math.ceil(math.log(1.0 - confidence) / (challenges * math.log(1.0 - lost)))


def deal_layout(verified: VerifiedManifest) -> DealLayout:
    """The layout a deal on this manifest must record."""
    m = verified.manifest
    if m.format_version < 3:
        raise StorageError(
            "a storage deal needs a manifest of format 3 (shares addressed by block roots); "
            "re-publish this dataset to make one"
        )

    def blocks(chunk: int) -> int:
        return block_count(SHARE_HEADER_SIZE + -(-m.ciphertext_size(chunk) // m.k))

    last = m.chunk_count - 1
    return DealLayout(m.chunk_count * m.n, last * m.n, blocks(0), blocks(last))


@dataclass(frozen=True)
class ShareList:
    """The dataset-tree leaves one node holds, and the tree a deal commits to."""

    leaves: tuple[int, ...]

    @property
    def tree(self) -> MerkleTree:
        return MerkleTree([leaf.to_bytes(32, "big") for leaf in self.leaves])

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def count(self) -> int:
        return len(self.leaves)


def share_lists(
    verified: VerifiedManifest, locations: Mapping[bytes, Sequence[str]]
) -> dict[str, ShareList]:
    """Each location's share list, from a placement's ``share -> locations`` map."""
    m = verified.manifest
    found: dict[str, list[int]] = {}
    for share, where in locations.items():
        position = m.share_position(share)
        if position is None:
            raise IntegrityError(f"share {share.hex()} is not in the manifest")
        for loc in where:
            found.setdefault(loc, []).append(position[0] * m.n + position[1])
    return {loc: ShareList(tuple(sorted(leaves))) for loc, leaves in found.items()}


def placement_share_lists(
    verified: VerifiedManifest, placement: PlacementRecord
) -> dict[str, ShareList]:
    """Each location's share list from a placement record of either version (a
    positional one names each share's leaf directly)."""
    if placement.format_version != POSITIONAL_VERSION:
        return share_lists(verified, placement.locations)
    found: dict[str, list[int]] = {}
    for leaf, j in enumerate(holder_ids(placement.holders)):
        if j:
            found.setdefault(placement.nodes[j - 1], []).append(leaf)
    return {loc: ShareList(tuple(leaves)) for loc, leaves in found.items()}


def challenge_indexes(
    seed: bytes, deal: int, node: str, period: int, count: int, share_count: int
) -> list[tuple[int, int]]:
    """(entry in the share list, block selector) of each challenge, as the contract
    derives them: ``keccak256(abi.encode(seed, deal, node, period, i))``."""
    out = []
    for i in range(count):
        r = int.from_bytes(
            keccak(
                abi_encode(
                    ["bytes32", "uint256", "address", "uint256", "uint256"],
                    [seed, deal, node, period, i],
                )
            ),
            "big",
        )
        out.append((r % share_count, r >> 128))
    return out


ShareReader = Callable[[bytes], bytes | None]


def disk_reader(data_dir: Path) -> tuple[ShareReader, Callable[[bytes], bool]]:
    """(read, holds) over a storage node's data directory, read-only, so a prover
    can run beside the node: ``holds`` asks the index, ``read`` reads one blob."""
    from datagora.storage.packs import share_location

    def holds(address: bytes) -> bool:
        return share_location(data_dir, address.hex()) is not None

    def read(address: bytes) -> bytes | None:
        where = share_location(data_dir, address.hex())
        if where is None:
            return None
        path, offset, length = where
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
        return data if len(data) == length else None

    return read, holds


class DealProver:
    """Answers one node's challenges from the shares it holds.

    ``read_share(address)`` returns a held share's bytes (or None); ``holds(address)``
    says cheaply whether it is held (an index lookup: listing what a node holds
    reads no share); ``manifest`` gives the verified manifest a deal's dataset root
    belongs to.
    """

    def __init__(
        self,
        deals: StorageDeals,
        account: LocalAccount,
        read_share: ShareReader,
        manifest: Callable[[DealInfo], VerifiedManifest],
        holds: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.deals = deals
        self.account = account
        self.read_share = read_share
        self.holds = holds or (lambda address: read_share(address) is not None)
        self.manifest = manifest
        self.last_answer_ms = 0.0

    def held_list(self, verified: VerifiedManifest) -> ShareList:
        """The leaves of ``verified`` this node holds."""
        m = verified.manifest
        # A paged manifest's chunks come from its pages on this node's disk.
        leaves = [
            c * m.n + j
            for c, chunk in local_chunk_records(verified, self.read_share)
            for j, share in enumerate(chunk.shares)
            if self.holds(share)
        ]
        return ShareList(tuple(leaves))

    def check(self, deal: int) -> tuple[DealInfo, VerifiedManifest, ShareList]:
        """Check what the deal commits this node to against the manifest and the
        shares held; raises :class:`StorageError` with the first mismatch."""
        info = self.deals.deal(deal)
        verified = self.manifest(info)
        if verified.manifest.merkle_root != info.root:
            raise StorageError(f"deal {deal} is for another dataset root than the manifest's")
        if deal_layout(verified) != info.layout:
            raise StorageError(f"deal {deal} records another layout than the manifest's")
        slot = self.deals.slot_of(deal, self.account.address)
        held = self.held_list(verified)
        if (held.root, held.count) != (slot.shares_root, slot.share_count):
            raise StorageError(
                f"deal {deal} names {slot.share_count} shares for this node that are not the "
                f"{held.count} it holds; refusing to post collateral for it"
            )
        return info, verified, held

    def join(self, deal: int) -> None:
        """Check the deal, then post its collateral (approving it first)."""
        from datagora.ledger.tokens import MarketToken

        info, _, _ = self.check(deal)
        if info.terms.collateral:
            token = MarketToken(self.deals.chain, self.deals.token())
            token.approve(self.account, self.deals.address, info.terms.collateral)
        self.deals.join(self.account, deal)

    def answers(self, deal: int, period: int, seed: bytes | None = None) -> list[Answer]:
        """This period's answers, computed from the held shares (reads only the
        challenged shares)."""
        started = time.perf_counter()
        info = self.deals.deal(deal)
        verified = self.manifest(info)
        slot = self.deals.slot_of(deal, self.account.address)
        held = self.held_list(verified) if slot.share_count else ShareList(())
        if seed is None:
            seed = self.deals.seed_of(deal, period)
        if seed == bytes(32):
            raise StorageError(f"period {period} of deal {deal} has no seed yet (or it was lost)")
        address_and_path = self._dataset_paths(verified)
        list_tree = held.tree
        out = []
        for entry, selector in challenge_indexes(
            seed, deal, self.account.address, period, info.terms.challenges, slot.share_count
        ):
            leaf = held.leaves[entry]
            address, dataset_path = address_and_path(leaf)
            data = self.read_share(address)
            if data is None:
                raise StorageError(f"share at leaf {leaf} is no longer held")
            blocks = block_count(len(data))
            if blocks != info.layout.blocks(leaf):
                raise IntegrityError(f"share at leaf {leaf} has {blocks} blocks, not the deal's")
            block, path, root = block_proof(data, selector % blocks)
            if root != address:
                # A damaged share cannot be proven: say so (repair it) rather than
                # send a proof the contract would refuse.
                raise IntegrityError(f"share at leaf {leaf} is damaged; repair it")
            out.append(
                Answer(
                    entry,
                    leaf,
                    list_tree.proof(entry).path,
                    block,
                    path.path,
                    dataset_path,
                )
            )
        self.last_answer_ms = (time.perf_counter() - started) * 1000
        return out

    def _dataset_paths(
        self, verified: VerifiedManifest
    ) -> Callable[[int], tuple[bytes, tuple[bytes, ...]]]:
        """leaf -> (share address, its path to the dataset root): from the whole
        share list (formats 2, 3), or through the pages on this node's disk (4)."""
        if verified.paged:

            def paged(leaf: int) -> tuple[bytes, tuple[bytes, ...]]:
                address, proof = local_leaf_proof(verified, leaf, self.read_share)
                return address, proof.path

            return paged
        hashes = list(verified.manifest.share_hashes())
        tree = MerkleTree(hashes)
        return lambda leaf: (hashes[leaf], tree.proof(leaf).path)

    def prove(self, deal: int, period: int) -> int:
        """Answer and submit ``period``; returns the gas used."""
        return self.deals.prove(self.account, deal, period, self.answers(deal, period)).gas_used

    def due(self, deals: Iterable[int]) -> list[tuple[int, int]]:
        """(deal, period) pairs this node can prove now and has not."""
        from datagora.ledger.deals import PeriodState

        now = self.deals.chain.block_number
        out = []
        for deal in deals:
            info = self.deals.deal(deal)
            slot = self.deals.slot_of(deal, self.account.address)
            if not slot.joined or slot.settled or now <= info.start:
                continue
            current = min((now - info.start - 1) // info.terms.period_blocks, info.end_period - 1)
            for period in range(max(0, current - 1), current + 1):
                if now >= info.window_end(period) or now <= info.seed_block(period):
                    continue
                if self.deals.state_of(deal, self.account.address, period) is PeriodState.OPEN:
                    out.append((deal, period))
        return out

    def run_once(self, deals: Iterable[int]) -> list[tuple[int, int, int]]:
        """Prove everything due; returns (deal, period, gas) for each proof sent."""
        return [(d, p, self.prove(d, p)) for d, p in self.due(deals)]


def deal_bytes(layout: DealLayout) -> int:
    """The bytes of every share a deal's dataset version has (block-rounded)."""
    full = layout.last_from * layout.full_blocks
    last = (layout.leaf_count - layout.last_from) * layout.last_blocks
    return (full + last) * BLOCK_SIZE


class DealQuotas:
    """A :class:`~datagora.storage.auth.QuotaSource`: an account that owns an open
    deal naming this node (one of ``nodes()``, the node's account addresses) may
    store the deal's whole dataset version on it (every share, so repair can move
    any of them here) plus a margin for its manifest and placement records:
    ``size + size // 8 + 1 MiB``. Read from the chain, cached ``ttl`` seconds (a
    new deal takes effect within ``ttl``; an ended or expired one stops granting).

    A deal is open while its last period can still be proven (before
    ``window_end(end_period - 1)``) and this node's slot is not settled.
    """

    MARGIN_BYTES = 1 << 20

    def __init__(
        self,
        deals: StorageDeals,
        nodes: Callable[[], Iterable[str]],
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deals = deals
        self.nodes = nodes
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._table: dict[str, int] = {}
        self._read_at: float | None = None

    def granted(self, account: str) -> int:
        return self.table().get(account.lower(), 0)

    def table(self) -> dict[str, int]:
        """Owner (lower case) -> bytes granted on this node, refreshed after ``ttl``."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl:
                self._table = self._read()
                self._read_at = now
            return self._table

    def _read(self) -> dict[str, int]:
        mine = {a.lower() for a in self.nodes()}
        table: dict[str, int] = {}
        if not mine:
            return table
        block = self.deals.chain.block_number
        for deal in range(1, self.deals.deal_count() + 1):
            info = self.deals.deal(deal)
            if info.end_period == 0 or block >= info.window_end(info.end_period - 1):
                continue
            slots = self.deals.slots(deal)
            if not any(s.node.lower() in mine and not s.settled for s in slots):
                continue
            size = deal_bytes(info.layout)
            owner = info.owner.lower()
            table[owner] = table.get(owner, 0) + size + size // 8 + self.MARGIN_BYTES
        return table


class DealWatcher:
    """A storage node's own prover: every ``every`` seconds it lists the deals that
    name ``account``, joins those it has not joined (only with ``accept``: after
    :meth:`DealProver.check` matched the deal to the shares held, posting the
    collateral), and proves every period due. Runs in a thread of the node
    (:meth:`start`) so a network's deals are proven without a manual command.

    ``manifest_hash(dataset)`` is the dataset's current manifest hash (the ledger's);
    the manifest is read from ``data_dir`` (a node in a deal holds it).
    """

    def __init__(
        self,
        deals: StorageDeals,
        account: LocalAccount,
        data_dir: Path,
        manifest_hash: Callable[[int], bytes],
        accept: bool = False,
        every: float = 12.0,
    ) -> None:
        from datagora.storage.manifest import verify_manifest

        read, holds = disk_reader(data_dir)
        cache: dict[bytes, VerifiedManifest] = {}

        def manifest(info: DealInfo) -> VerifiedManifest:
            digest = manifest_hash(info.dataset)
            if digest not in cache:
                raw = read(digest)
                if raw is None:
                    raise StorageError(f"manifest {digest.hex()} is not on this node")
                cache[digest] = verify_manifest(raw, digest)
            return cache[digest]

        self.prover = DealProver(deals, account, read, manifest, holds)
        self.accept = accept
        self.every = every
        self.refused: dict[int, str] = {}
        self.proofs: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mine(self) -> tuple[list[int], list[int]]:
        """(joined, not joined) deals naming this node whose slot is not settled."""
        deals = self.prover.deals
        me = self.prover.account.address.lower()
        joined: list[int] = []
        waiting: list[int] = []
        for deal in range(1, deals.deal_count() + 1):
            for slot in deals.slots(deal):
                if slot.node.lower() == me and not slot.settled:
                    (joined if slot.joined else waiting).append(deal)
        return joined, waiting

    def run_once(self) -> list[tuple[int, int, int]]:
        """Join what it accepts, then prove what is due; (deal, period, gas) sent."""
        joined, waiting = self.mine()
        if self.accept:
            for deal in waiting:
                try:
                    self.prover.join(deal)
                    joined.append(deal)
                    self.refused.pop(deal, None)
                except Exception as exc:  # not joined (tried again next round), said once
                    if self.refused.get(deal) != str(exc):
                        _log.warning("not joining deal %d: %s", deal, exc)
                    self.refused[deal] = str(exc)
        sent = []
        for deal, period in self.prover.due(joined):
            try:
                sent.append((deal, period, self.prover.prove(deal, period)))
            except Exception as exc:  # the next round tries again (or repair is due)
                _log.warning("could not prove deal %d period %d: %s", deal, period, exc)
        self.proofs.extend(sent)
        return sent

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the chain is away: try again next round
                _log.warning("deal prover: %s", exc)
            self._stop.wait(self.every)

    def start(self) -> DealWatcher:
        self._thread = threading.Thread(target=self._loop, name="deal-prover", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
