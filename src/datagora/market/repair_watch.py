"""An owner's repair watcher: storage deals heal by themselves.

:class:`RepairWatch` follows the chain for the owner's storage deals (``DealOpened``
with the owner's topic), the periods their nodes miss (``PeriodMissed`` with the
deals' topics) and what happens to those nodes in the NodeRegistry (``Leaving``,
``Slashed``, ``Withdrawn`` with the nodes' topics; a ``MinStakeChanged`` that
leaves one below the minimum). Every (deal, node) pair found in trouble is queued
in a SQLite file together with the last block read, in one transaction: a restart
resumes from there, and a pair once handled is never handled again.

Each dataset with queued pairs is then repaired in steps, each saved before the
next: (1) the troubled nodes' shares are rebuilt onto registered, active storage
nodes holding nothing of the dataset yet, or, if they cannot take every chunk's
missing shares, onto any other healthy node (:func:`~datagora.market.deals.rebuild_away`);
(2) the repair is recorded on chain (``StorageLog.record_repair``); (3) a new deal is
opened paying the nodes that received the shares (those a running deal of the
dataset does not pay already), for the periods the troubled deal had left and on
its terms (a deal's node list and each node's share-list root are
fixed when it opens, so the troubled deal cannot be amended: its troubled node
keeps missing periods, each refunded to the owner). A dataset whose repair fails
is tried again after a back-off (doubling, capped); the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datagora.errors import ConfigError, DatagoraError
from datagora.ledger.events import DEFAULT_PAGE
from datagora.market.deals import Rebuilt, open_deal, rebuild_away, record_rebuilt

if TYPE_CHECKING:
    from datagora.ledger.deals import StorageDeals
    from datagora.market.flows import Marketplace

__all__ = ["RepairAction", "RepairWatch"]

_log = logging.getLogger("datagora.repair")

RETRY_FIRST = 15.0
"""Seconds before a failed dataset repair is tried again; doubled on each failure."""
RETRY_MAX = 900.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deals (
    deal INTEGER PRIMARY KEY, dataset INTEGER NOT NULL, nodes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS troubles (
    deal INTEGER NOT NULL, node TEXT NOT NULL, dataset INTEGER NOT NULL,
    reason TEXT NOT NULL, block INTEGER NOT NULL, handled TEXT,
    PRIMARY KEY (deal, node));
CREATE TABLE IF NOT EXISTS jobs (
    dataset INTEGER PRIMARY KEY, rebuilt TEXT, recorded_tx TEXT, replacement_deal INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, retry_at REAL NOT NULL DEFAULT 0, error TEXT);
"""
_FORGET = tuple(f"DELETE FROM {t}" for t in ("state", "deals", "troubles", "jobs"))
_SET_JOB = {
    c: f"UPDATE jobs SET {c} = ? WHERE dataset = ?"
    for c in ("rebuilt", "recorded_tx", "replacement_deal")
}


@dataclass(frozen=True)
class RepairAction:
    """One thing the watcher did, as its one log line says."""

    dataset: int
    action: str
    """``repaired``, ``skipped`` or ``failed``."""
    detail: str
    deals: tuple[int, ...] = ()
    nodes: tuple[str, ...] = ()
    rebuilt: int = 0
    recorded_tx: str | None = None
    replacement_deal: int | None = None

    def line(self) -> str:
        return f"dataset {self.dataset}: {self.action}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RepairWatch:
    """Repairs the storage deals of ``m``'s account (the owner and controller of
    their datasets) when a deal node leaves, is slashed, falls below the minimum
    stake or misses a period. State (last block read, troubles, repair steps) is
    kept in ``state_file``; ``say`` gets one line per action."""

    def __init__(
        self,
        m: Marketplace,
        state_file: Path,
        every: float = 12.0,
        page: int = DEFAULT_PAGE,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if m.ledger.deals is None:
            raise ConfigError(
                "this deployment has no StorageDeals contract: redeploy (datagora chain deploy)"
            )
        if m.identity is None:
            raise ConfigError("the repair watcher acts as the owner: give --account")
        self.m = m
        self.deals: StorageDeals = m.ledger.deals
        self.owner = m.identity.address
        self.every = every
        self.page = page
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.say = say or _log.info
        self.clock = clock
        state_file.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(state_file, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._reset_if_other_chain()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state --------------------------------------------------------------------------

    def _get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _reset_if_other_chain(self) -> None:
        """A state file of another deployment (or owner) starts over: its blocks and
        deal ids mean nothing here."""
        whose = f"{self.deals.address.lower()}:{self.owner.lower()}"
        if self._get("deployment") == whose:
            return
        with self._db:
            self._db.execute("BEGIN")
            for sql in _FORGET:
                self._db.execute(sql)
            self._db.execute("INSERT INTO state VALUES ('deployment', ?)", (whose,))
            start = self.m.ledger.deployment.start_block - 1
            self._db.execute("INSERT INTO state VALUES ('cursor', ?)", (str(max(start, -1)),))

    @property
    def cursor(self) -> int:
        """The last block whose events were read."""
        return int(self._get("cursor") or -1)

    def troubles(self, pending_only: bool = False) -> list[dict[str, Any]]:
        """The (deal, node) pairs found in trouble, oldest first, and how each was handled."""
        sql = "SELECT deal, node, dataset, reason, block, handled FROM troubles"
        if pending_only:
            sql += " WHERE handled IS NULL"
        rows = self._db.execute(sql + " ORDER BY block, deal, node").fetchall()
        keys = ("deal", "node", "dataset", "reason", "block", "handled")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- reading the chain ----------------------------------------------------------------

    def _known(self) -> dict[int, tuple[int, list[str]]]:
        rows = self._db.execute("SELECT deal, dataset, nodes FROM deals").fetchall()
        return {int(d): (int(ds), list(json.loads(n))) for d, ds, n in rows}

    def follow(self) -> int:
        """Read the events since the cursor, a page at a time, queueing the troubles
        each page shows and moving the cursor past it (one transaction per page);
        returns the number of troubles queued."""
        registry = self.m.ledger.registry
        head = self.m.ledger.chain.block_number
        queued = 0
        lo = self.cursor + 1
        while lo <= head:
            hi = min(lo + self.page - 1, head)
            opened = self.deals.find_events("DealOpened", None, None, self.owner, start=lo, end=hi)
            known = self._known()
            for ev in opened:
                known[int(ev["deal"])] = (int(ev["dataset"]), [str(a) for a in ev["nodes"]])
            found: list[tuple[int, str, str, int]] = []  # deal, node, reason, block
            if known:
                for ev in self.deals.find_events("PeriodMissed", sorted(known), start=lo, end=hi):
                    reason = f"missed period {ev['period']}"
                    if ev["slashed"]:
                        reason += f" (slashed {ev['slashed']})"
                    found.append((int(ev["deal"]), str(ev["node"]), reason, ev.block_number))
                by_node: dict[str, list[int]] = {}
                for deal, (_, nodes) in known.items():
                    for node in nodes:
                        by_node.setdefault(node.lower(), []).append(deal)
                addresses = sorted({n for _, ns in known.values() for n in ns})
                node_events: list[tuple[str, str, int]] = []
                for ev in registry.find_events("Leaving", addresses, start=lo, end=hi):
                    node_events.append((str(ev["node"]), "leaving the registry", ev.block_number))
                for ev in registry.find_events("Withdrawn", addresses, start=lo, end=hi):
                    node_events.append((str(ev["node"]), "gone from the registry", ev.block_number))
                for ev in registry.find_events("Slashed", addresses, start=lo, end=hi):
                    reason = f"slashed {ev['amount']} in the registry"
                    if self._below_minimum(str(ev["node"])):
                        reason += "; stake below the minimum"
                    node_events.append((str(ev["node"]), reason, ev.block_number))
                if registry.find_events("MinStakeChanged", start=lo, end=hi):
                    for node in addresses:
                        if self._below_minimum(node):
                            node_events.append((node, "stake below the minimum", hi))
                for node, reason, block in node_events:
                    for deal in by_node.get(node.lower(), []):
                        found.append((deal, node, reason, block))
            with self._db:
                self._db.execute("BEGIN")
                for ev in opened:
                    self._db.execute(
                        "INSERT OR IGNORE INTO deals VALUES (?, ?, ?)",
                        (int(ev["deal"]), int(ev["dataset"]), json.dumps(list(ev["nodes"]))),
                    )
                for deal, node, reason, block in found:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO troubles VALUES (?, ?, ?, ?, ?, NULL)",
                        (deal, node, known[deal][0], reason, block),
                    )
                    queued += cur.rowcount
                self._db.execute("UPDATE state SET value = ? WHERE key = 'cursor'", (str(hi),))
            lo = hi + 1
        return queued

    def _below_minimum(self, node: str) -> bool:
        from datagora.ledger.errors import NotFound

        registry = self.m.ledger.registry
        try:
            info = registry.node(node)
        except NotFound:
            return True
        return info.stake < registry.required_stake(info.roles)

    # -- repairing ------------------------------------------------------------------------

    def repair_pending(self) -> list[RepairAction]:
        """Repair each dataset with queued troubles whose back-off is over; one failing
        dataset does not stop the others."""
        by_dataset: dict[int, list[dict[str, Any]]] = {}
        for t in self.troubles(pending_only=True):
            by_dataset.setdefault(int(t["dataset"]), []).append(t)
        actions = []
        now = self.clock()
        for dataset, found in sorted(by_dataset.items()):
            job = self._job(dataset)
            if job["retry_at"] > now:
                continue
            try:
                action = self._repair(dataset, found, job)
            except Exception as exc:  # any failure backs off this dataset only
                if not isinstance(exc, (DatagoraError, OSError)):
                    _log.exception("repair of dataset %d failed unexpectedly", dataset)
                attempts = int(job["attempts"]) + 1
                wait = min(self.retry_max, self.retry_first * 2 ** (attempts - 1))
                self._db.execute(
                    "UPDATE jobs SET attempts = ?, retry_at = ?, error = ? WHERE dataset = ?",
                    (attempts, now + wait, str(exc), dataset),
                )
                action = RepairAction(
                    dataset,
                    "failed",
                    f"attempt {attempts}, next in {wait:.0f} s: {exc}",
                    tuple(sorted({int(t["deal"]) for t in found})),
                    tuple(sorted({str(t["node"]) for t in found})),
                )
            self.say(action.line())
            actions.append(action)
        return actions

    def _job(self, dataset: int) -> dict[str, Any]:
        self._db.execute("INSERT OR IGNORE INTO jobs (dataset) VALUES (?)", (dataset,))
        row = self._db.execute(
            "SELECT rebuilt, recorded_tx, replacement_deal, attempts, retry_at FROM jobs "
            "WHERE dataset = ?",
            (dataset,),
        ).fetchone()
        keys = ("rebuilt", "recorded_tx", "replacement_deal", "attempts", "retry_at")
        return dict(zip(keys, row, strict=True))

    def _set_job(self, dataset: int, column: str, value: object) -> None:
        self._db.execute(_SET_JOB[column], (value, dataset))

    def _close(self, dataset: int, found: Iterable[dict[str, Any]], how: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            for t in found:
                self._db.execute(
                    "UPDATE troubles SET handled = ? WHERE deal = ? AND node = ?",
                    (how, t["deal"], t["node"]),
                )
            self._db.execute("DELETE FROM jobs WHERE dataset = ?", (dataset,))

    def _repair(
        self, dataset: int, found: list[dict[str, Any]], job: dict[str, Any]
    ) -> RepairAction:
        from datagora.ledger.errors import NotFound

        block = self.m.ledger.chain.block_number
        version = self.m.dataset_info(dataset).version
        live: list[dict[str, Any]] = []
        terms = None
        for t in found:
            info = self.deals.deal(int(t["deal"]))
            slot = self.deals.slot_of(info.deal, str(t["node"]))
            if (
                info.end_period == 0
                or block >= info.window_end(info.end_period - 1)
                or slot.settled
                or info.version != version
            ):
                continue  # nothing left to keep under this deal
            live.append(t)
            left = info.end_period - self.deals.current_period(info.deal)
            if terms is None or left > terms.periods:
                terms = dataclasses.replace(info.terms, periods=max(1, left))
        deals = tuple(sorted({int(t["deal"]) for t in found}))
        nodes = tuple(sorted({str(t["node"]) for t in found}))
        if not live or terms is None:
            self._close(dataset, found, "nothing to keep: deal over, node settled or old version")
            return RepairAction(
                dataset, "skipped", "its deals are over or the nodes settled", deals, nodes
            )
        troubled: dict[str, str | None] = {}
        for t in live:
            try:
                troubled[str(t["node"])] = self.m.ledger.registry.node(str(t["node"])).endpoint
            except NotFound:
                troubled[str(t["node"])] = None
        if job["rebuilt"] is None:
            done = rebuild_away(self.m, dataset, troubled, prefer_fresh=True)
            saved = dataclasses.asdict(done)
            saved["manifest_hash"] = done.manifest_hash.hex()
            saved["placement_hash"] = done.placement_hash.hex() if done.placement_hash else None
            self._set_job(dataset, "rebuilt", json.dumps(saved))
        else:
            saved = json.loads(job["rebuilt"])
            done = Rebuilt(
                int(saved["dataset"]),
                bytes.fromhex(saved["manifest_hash"]),
                int(saved["rebuilt"]),
                bool(saved["healthy"]),
                bytes.fromhex(saved["placement_hash"]) if saved["placement_hash"] else None,
                dict(saved["moved_to"]),
            )
        recorded = job["recorded_tx"]
        if recorded is None and done.rebuilt and done.placement_hash is not None:
            recorded = record_rebuilt(self.m, done).tx_hash
            self._set_job(dataset, "recorded_tx", recorded)
        replacement = job["replacement_deal"]
        # Pay the nodes that took the shares unless a running deal of this dataset
        # pays them already (no free node was left: they hold more of it now).
        covered = self._covered(dataset, version, block)
        unpaid = {u: a for u, a in done.moved_to.items() if a.lower() not in covered}
        if replacement is None and unpaid:
            replacement, _ = open_deal(self.m, dataset, unpaid, terms)
            self._set_job(dataset, "replacement_deal", replacement)
        how = f"rebuilt {done.rebuilt} share(s)" + (
            f", replacement deal {replacement}" if replacement else ""
        )
        self._close(dataset, found, how)
        onto = ", ".join(done.moved_to) or "nowhere new"
        if replacement:
            paid = f"replacement deal {replacement} for {terms.periods} period(s)"
        else:
            paid = "no replacement deal (the nodes that took them are in a deal of it already)"
        return RepairAction(
            dataset,
            "repaired",
            f"moved off {', '.join(nodes)} (deal(s) {', '.join(map(str, deals))}): "
            f"{done.rebuilt} share(s) rebuilt onto {onto}; recorded {recorded}; {paid}",
            deals,
            nodes,
            done.rebuilt,
            recorded,
            replacement,
        )

    def _covered(self, dataset: int, version: int, block: int) -> set[str]:
        """The nodes (lower case) an unsettled slot of a running deal of the owner on
        ``dataset``'s current version pays."""
        out: set[str] = set()
        for deal, (ds, _) in self._known().items():
            if ds != dataset:
                continue
            info = self.deals.deal(deal)
            if info.version != version or info.end_period == 0:
                continue
            if block >= info.window_end(info.end_period - 1):
                continue
            out |= {s.node.lower() for s in self.deals.slots(deal) if not s.settled}
        return out

    # -- running --------------------------------------------------------------------------

    def run_once(self) -> list[RepairAction]:
        """Read the new events, then repair what is due."""
        self.follow()
        return self.repair_pending()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except DatagoraError as exc:  # the chain is away: the next round tries again
                _log.warning("repair watcher: %s", exc)
            except Exception:  # a thread that dies says nothing: log it, go on next round
                _log.exception("repair watcher round failed")
            self._stop.wait(self.every)

    def start(self) -> RepairWatch:
        """Run :meth:`run_once` every ``every`` seconds in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="repair-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def close(self) -> None:
        self.stop()
        self._db.close()
