"""A dataset's history rebuilt from the ledger alone: who published, held, sold, ordered,
requested and was granted what, when.

Nothing here asks the catalog or the owner: every entry is an event the chain
holds, with its block, block time and transaction. Events this module does not
know yet (a contract added later) still appear, as :attr:`Kind.OTHER` with their
arguments spelled out.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datagora.audit._logs import DEFAULT_PAGE, DatasetLogReader
from datagora.audit.errors import DatasetNotFound
from datagora.display import format_amount, format_time
from datagora.ledger import Event, Ledger
from datagora.ledger.base import ZERO_ADDRESS

EMPTY32 = bytes(32)


class Kind(enum.StrEnum):
    """What a timeline entry is about."""

    CREATED = "created"
    VERSION = "version"
    STATE = "state"
    HOLDER = "holder"
    APPROVAL = "approval"
    MINT = "mint"
    TRANSFER = "transfer"
    BURN = "burn"
    ORDER = "order"
    SERVICE = "service"
    EXCHANGE = "exchange"
    SALE = "sale"
    PRICE = "price"
    DISPENSER = "dispenser"
    DISPENSE = "dispense"
    REQUEST = "request"
    GRANT = "grant"
    DENIAL = "denial"
    REVOCATION = "revocation"
    LIST = "list"
    CIPHERTEXT = "ciphertext"
    ALGORITHM = "algorithm"
    JOB = "job"
    JOB_DECISION = "job-decision"
    JOB_RESULT = "job-result"
    REPAIR = "repair"
    DEAL = "deal"
    PROOF = "proof"
    MISSED = "missed"
    ANCHOR = "anchor"
    KEY_VALUE = "key-value"
    OTHER = "other"


@dataclass(frozen=True)
class TimelineEntry:
    """One event of a dataset's history."""

    block_number: int
    timestamp: int
    tx_hash: str
    log_index: int
    kind: Kind
    contract: str
    address: str
    event: str
    args: Mapping[str, Any]
    text: str

    @property
    def time(self) -> datetime:
        """The block time, in UTC."""
        return datetime.fromtimestamp(self.timestamp, UTC)


@dataclass(frozen=True)
class Holding:
    """A period during which `holder` held the data NFT (and so controlled the dataset)."""

    holder: str
    since_block: int
    since: int
    until_block: int | None
    until: int | None


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a dataset as the chain recorded it."""

    version: int
    metadata_hash: bytes
    metadata_uri: str
    manifest_hash: bytes
    merkle_root: bytes
    author: str
    block_number: int
    timestamp: int
    tx_hash: str


def _hx(value: bytes) -> str:
    return "none" if value == EMPTY32 else "0x" + value.hex()


_STATES = {0: "active", 1: "disabled", 2: "retired", 3: "awaiting re-key"}
_LISTS = {0: "no list", 1: "allow list", 2: "deny list"}


def _state(value: int) -> str:
    return _STATES.get(value, f"state {value}")


def _generic(event: Event) -> str:
    args = ", ".join(f"{k}={_value(v)}" for k, v in event.args.items())
    return f"{event.contract}.{event.name}({args})"


def _value(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return str(v)


def _created(a: Mapping[str, Any]) -> tuple[Kind, str]:
    return Kind.CREATED, (
        f"created by {a['owner']}, version 1: metadata {_hx(a['metadata_hash'])} "
        f"({a['metadata_uri'] or 'no URI'}), manifest {_hx(a['manifest_hash'])}, "
        f"root {_hx(a['merkle_root'])}, datatoken {a['datatoken']}"
    )


def _updated(a: Mapping[str, Any]) -> tuple[Kind, str]:
    return Kind.VERSION, (
        f"version {a['version']} by {a['updater']}: metadata {_hx(a['new_metadata_hash'])} "
        f"({a['metadata_uri'] or 'no URI'}), manifest {_hx(a['new_manifest_hash'])}, "
        f"root {_hx(a['new_merkle_root'])}"
    )


def _nft_transfer(a: Mapping[str, Any]) -> tuple[Kind, str]:
    if a["sender"] == ZERO_ADDRESS:
        return Kind.HOLDER, f"data NFT minted to {a['receiver']}"
    if a["receiver"] == ZERO_ADDRESS:
        return Kind.HOLDER, f"data NFT burned by {a['sender']}"
    return Kind.HOLDER, f"data NFT passed from {a['sender']} to {a['receiver']}"


def _token_transfer(a: Mapping[str, Any]) -> tuple[Kind, str]:
    n = a["value"]
    if a["sender"] == ZERO_ADDRESS:
        return Kind.MINT, f"{n} datatoken(s) minted to {a['receiver']}"
    if a["receiver"] == ZERO_ADDRESS:
        return Kind.BURN, f"{n} datatoken(s) spent by {a['sender']}"
    return Kind.TRANSFER, f"{n} datatoken(s) from {a['sender']} to {a['receiver']}"


def _order(a: Mapping[str, Any]) -> tuple[Kind, str]:
    payer = "" if a["payer"] == a["consumer"] else f", paid by {a['payer']}"
    return Kind.ORDER, (
        f"order of service {a['service_id']} for {a['consumer']}{payer}, "
        f"valid until {format_time(a['expires_at'])}"
    )


def _bought(a: Mapping[str, Any]) -> tuple[Kind, str]:
    return Kind.SALE, (
        f"{a['buyer']} bought {a['amount']} datatoken(s) for {format_amount(a['total'])} "
        f"(market fee {format_amount(a['market_fee'])}, "
        f"protocol fee {format_amount(a['protocol_fee'])}, "
        f"rest to {a['publisher']})"
    )


def _granted(a: Mapping[str, Any]) -> tuple[Kind, str]:
    until = format_time(a["expires_at"])
    return Kind.GRANT, f"request {a['request_id']} granted to {a['consumer']} until {until}"


_Describe = Callable[[Mapping[str, Any]], tuple[Kind, str]]

# (contract, event) -> (kind, line). New event kinds (proxy access-log anchors,
# compute jobs, storage repairs) get a line here when their contracts land;
# until then they are shown generically.
_DESCRIBE: dict[tuple[str, str], _Describe] = {
    ("DataNFT", "DatasetCreated"): _created,
    ("DataNFT", "DatasetUpdated"): _updated,
    ("DataNFT", "DatasetStateChanged"): lambda a: (
        Kind.STATE,
        f"state {_state(a['old_state'])} -> {_state(a['new_state'])} by {a['updater']}",
    ),
    ("DataNFT", "Transfer"): _nft_transfer,
    ("DataNFT", "DatasetTransferred"): lambda a: (
        Kind.STATE,
        f"transfer {a['epoch']} to {a['holder']}: compute operators and trusted algorithms "
        f"of {a['previous']} ended; nothing sells or is served until the re-key",
    ),
    ("DataNFT", "Approval"): lambda a: (
        Kind.APPROVAL,
        f"{a['owner']} approved {a['approved']} to move the data NFT",
    ),
    ("Datatoken", "Transfer"): _token_transfer,
    ("Datatoken", "Approval"): lambda a: (
        Kind.APPROVAL,
        f"{a['owner']} allowed {a['spender']} to move {a['value']} datatoken(s)",
    ),
    ("Datatoken", "OrderStarted"): _order,
    ("Datatoken", "ServiceChanged"): lambda a: (
        Kind.SERVICE,
        f"service {a['service_id']} "
        + (f"offered, orders valid {a['timeout']} s" if a["timeout"] else "withdrawn"),
    ),
    ("FixedRateExchange", "ExchangeCreated"): lambda a: (
        Kind.EXCHANGE,
        f"on sale at {format_amount(a['price'])} per datatoken, "
        f"market fee {a['market_fee_bps']} bps "
        f"to {a['market_fee_recipient']}",
    ),
    ("FixedRateExchange", "PriceChanged"): lambda a: (
        Kind.PRICE,
        f"price {format_amount(a['old_price'])} -> {format_amount(a['new_price'])}",
    ),
    ("FixedRateExchange", "ExchangeActivated"): lambda a: (
        Kind.EXCHANGE,
        "sales resumed" if a["active"] else "sales paused",
    ),
    ("FixedRateExchange", "Bought"): _bought,
    ("Dispenser", "DispenserCreated"): lambda a: (
        Kind.DISPENSER,
        f"free dispenser, at most {a['max_per_address']} per address",
    ),
    ("Dispenser", "DispenserChanged"): lambda a: (
        Kind.DISPENSER,
        f"dispenser {'active' if a['active'] else 'inactive'}, "
        f"at most {a['max_per_address']} per address",
    ),
    ("Dispenser", "Dispensed"): lambda a: (
        Kind.DISPENSE,
        f"{a['amount']} free datatoken(s) dispensed to {a['to']}",
    ),
    ("AccessRegistry", "AccessRequested"): lambda a: (
        Kind.REQUEST,
        f"request {a['request_id']} by {a['consumer']}: {a['purpose']!r}",
    ),
    ("AccessRegistry", "AccessGranted"): _granted,
    ("AccessRegistry", "AccessDenied"): lambda a: (
        Kind.DENIAL,
        f"request {a['request_id']} of {a['consumer']} denied: {a['reason']!r}",
    ),
    ("AccessRegistry", "AccessRevoked"): lambda a: (
        Kind.REVOCATION,
        f"access of {a['consumer']} (request {a['request_id']}) revoked",
    ),
    ("AccessRegistry", "ListChanged"): lambda a: (
        Kind.LIST,
        f"{a['account']} put on the {_LISTS.get(a['list_kind'], str(a['list_kind']))}"
        if a["list_kind"]
        else f"{a['account']} removed from the allow/deny lists",
    ),
    ("CiphertextStore", "RecordStored"): lambda a: (
        Kind.CIPHERTEXT,
        f"ciphertext record {a['record_id']} by {a['writer']}: "
        f"{len(a['ciphertext'])} bytes, SHA-256 {_hx(a['ciphertext_sha256'])}, key {_hx(a['key'])}",
    ),
    ("AccessLog", "AccessLogAnchored"): lambda a: (
        Kind.ANCHOR,
        f"proxy {a['proxy']} anchored its access log: {a['entries']} entries, "
        f"digest {_hx(a['digest'])} (anchor {a['sequence']})",
    ),
    ("KeyValueStore", "KeySet"): lambda a: (
        Kind.KEY_VALUE,
        f"the holder {a['owner']} set key {_hx(a['key'])} to {_hx(a['content_hash'])} "
        f"(version {a['version']})",
    ),
    ("KeyValueStore", "KeyRemoved"): lambda a: (
        Kind.KEY_VALUE,
        f"the holder {a['owner']} removed key {_hx(a['key'])} (version {a['version']})",
    ),
    ("StorageLog", "StorageRepaired"): lambda a: (
        Kind.REPAIR,
        f"storage repaired by {a['repairer']}: {a['shares_rebuilt']} share(s) rebuilt, "
        f"placement {_hx(a['placement_hash'])}",
    ),
    ("StorageDeals", "DealOpened"): lambda a: (
        Kind.DEAL,
        f"storage deal {a['deal']} opened by {a['owner']} for version {a['version']}: "
        f"{len(a['nodes'])} node(s), {a['periods']} period(s) of {a['period_blocks']} blocks, "
        f"{a['challenges']} challenge(s) a period",
    ),
    ("StorageDeals", "NodeJoined"): lambda a: (
        Kind.DEAL,
        f"storage node {a['node']} joined deal {a['deal']}",
    ),
    ("StorageDeals", "ProofAccepted"): lambda a: (
        Kind.PROOF,
        f"storage node {a['node']} proved period {a['period']} of deal {a['deal']}",
    ),
    ("StorageDeals", "PeriodMissed"): lambda a: (
        Kind.MISSED,
        f"storage node {a['node']} missed period {a['period']} of deal {a['deal']} "
        f"(reported by {a['reporter']}): slashed",
    ),
    ("StorageDeals", "NodeSettled"): lambda a: (
        Kind.DEAL if a["missed"] == 0 else Kind.MISSED,
        f"storage node {a['node']} settled in deal {a['deal']}"
        + (f": {a['missed']} period(s) unproven, slashed" if a["missed"] else ""),
    ),
    ("StorageDeals", "DealEnded"): lambda a: (
        Kind.DEAL,
        f"storage deal {a['deal']} ended by {a['owner']} after period {a['end_period']}",
    ),
    ("ComputeRegistry", "TrustedAlgorithmChanged"): lambda a: (
        Kind.ALGORITHM,
        f"algorithm {_hx(a['algorithm'])} "
        + ("trusted (runs without review)" if a["trusted"] else "no longer trusted"),
    ),
    ("ComputeRegistry", "OperatorChanged"): lambda a: (
        Kind.ALGORITHM,
        f"{a['operator']} "
        + ("may" if a["allowed"] else "may no longer")
        + " record and settle compute jobs",
    ),
    ("ComputeRegistry", "JobRecorded"): lambda a: (
        Kind.JOB,
        f"compute job {a['job']} for {a['consumer']} on version {a['version']}: "
        f"algorithm {_hx(a['algorithm'])}, parameters {_hx(a['params'])}"
        + (" (awaiting review)" if a["status"] == 1 else ""),
    ),
    ("ComputeRegistry", "JobDecided"): lambda a: (
        Kind.JOB_DECISION,
        f"compute job {a['job']} " + ("approved" if a["approved"] else f"denied: {a['reason']!r}"),
    ),
    ("ComputeRegistry", "JobCompleted"): lambda a: (
        Kind.JOB_RESULT,
        f"compute job {a['job']} "
        + (f"succeeded: result {_hx(a['result'])}" if a["succeeded"] else f"failed: {a['note']!r}")
        + (f", epsilon {a['epsilon_milli'] / 1000:g} spent" if a["epsilon_milli"] else ""),
    ),
}


def describe(event: Event) -> tuple[Kind, str]:
    """The kind and human-readable line of one event (generic for events not known here)."""
    describer = _DESCRIBE.get((event.contract, event.name))
    if describer is None:
        return Kind.OTHER, _generic(event)
    try:
        return describer(event.args)
    except (KeyError, TypeError, ValueError, OverflowError):
        # A contract changed an event's fields: show it as it is rather than fail.
        return Kind.OTHER, _generic(event)


def timeline(
    ledger: Ledger,
    dataset: int,
    start: int | None = None,
    end: int | None = None,
    page: int = DEFAULT_PAGE,
) -> list[TimelineEntry]:
    """Every event of `dataset`, in chain order, from the ledger alone.

    Reads from `start` (default: the deployment's start block) to `end` (default:
    the latest block) in pages of `page` blocks (halved when a node refuses a
    range). Raises :class:`DatasetNotFound` if the ledger has no such dataset.
    """
    datatoken = ledger.data_nft.datatoken_of(dataset) if dataset > 0 else ZERO_ADDRESS
    if datatoken == ZERO_ADDRESS:
        raise DatasetNotFound(
            f"dataset {dataset} does not exist on this ledger "
            f"(it has {ledger.data_nft.dataset_count()} datasets)"
        )
    first = ledger.deployment.start_block if start is None else start
    last = ledger.chain.block_number if end is None else end
    reader = DatasetLogReader(ledger)
    entries = []
    for timed in reader.read(dataset, datatoken, first, last, page):
        e = timed.event
        kind, text = describe(e)
        entries.append(
            TimelineEntry(
                block_number=e.block_number,
                timestamp=timed.timestamp,
                tx_hash=e.tx_hash,
                log_index=e.log_index,
                kind=kind,
                contract=e.contract,
                address=e.address,
                event=e.name,
                args=e.args,
                text=text,
            )
        )
    created = next((e.block_number for e in entries if e.kind is Kind.CREATED), 0)
    # Anchors made before the dataset existed say nothing about it.
    entries = [e for e in entries if e.kind is not Kind.ANCHOR or e.block_number >= created]
    entries += _holders_records(ledger, holders(entries), last)
    return sorted(entries, key=lambda e: (e.block_number, e.log_index))


def _holders_records(ledger: Ledger, held: Sequence[Holding], last: int) -> list[TimelineEntry]:
    """Key/value records (Datum's owner records) written by each holder while holding."""
    out: list[TimelineEntry] = []
    for h in held:
        end = last if h.until_block is None else h.until_block
        events = ledger.kv.events_of(h.holder, h.since_block, end)
        stamps = ledger.chain.block_timestamps(e.block_number for e in events)
        for event in events:
            kind, text = describe(event)
            out.append(
                TimelineEntry(
                    block_number=event.block_number,
                    timestamp=stamps[event.block_number],
                    tx_hash=event.tx_hash,
                    log_index=event.log_index,
                    kind=kind,
                    contract="KeyValueStore",
                    address=event.address,
                    event=event.name,
                    args=event.args,
                    text=text,
                )
            )
    return out


def holders(entries: Sequence[TimelineEntry]) -> list[Holding]:
    """Who held the data NFT, from when to when, according to `entries`."""
    out: list[Holding] = []
    for e in entries:
        if (e.contract, e.event) != ("DataNFT", "Transfer"):
            continue
        if out:
            last = out[-1]
            out[-1] = Holding(
                last.holder, last.since_block, last.since, e.block_number, e.timestamp
            )
        if e.args["receiver"] != ZERO_ADDRESS:
            out.append(Holding(e.args["receiver"], e.block_number, e.timestamp, None, None))
    return out


def versions(entries: Sequence[TimelineEntry]) -> list[DatasetVersion]:
    """Each version of the dataset (1 at creation, then one per update), with its hashes."""
    out = []
    for e in entries:
        a = e.args
        if (e.contract, e.event) == ("DataNFT", "DatasetCreated"):
            fields = (1, a["metadata_hash"], a["manifest_hash"], a["merkle_root"], a["owner"])
        elif (e.contract, e.event) == ("DataNFT", "DatasetUpdated"):
            fields = (
                int(a["version"]),
                a["new_metadata_hash"],
                a["new_manifest_hash"],
                a["new_merkle_root"],
                a["updater"],
            )
        else:
            continue
        version, metadata, manifest, root, author = fields
        out.append(
            DatasetVersion(
                version=version,
                metadata_hash=bytes(metadata),
                metadata_uri=str(a["metadata_uri"]),
                manifest_hash=bytes(manifest),
                merkle_root=bytes(root),
                author=str(author),
                block_number=e.block_number,
                timestamp=e.timestamp,
                tx_hash=e.tx_hash,
            )
        )
    return out
