"""The indexer: follows the ledger's events into the catalog database.

It resumes from the block it stopped at, indexes only blocks with the chosen
number of confirmations, and survives reorganisations: when the hash of an
indexed block no longer matches the chain, it finds the last block both agree
on, deletes everything indexed after it, and replays the affected datasets from
the events that remain.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from datagora.catalog import db as t
from datagora.catalog.db import Database
from datagora.catalog.resolver import MetadataResolver, datagora_uri
from datagora.errors import ConfigError
from datagora.ledger import BlockHeader, Event, EventReader, Ledger
from datagora.storage.errors import MetadataError
from datagora.storage.metadata import parse_metadata

STATUS = {1: "pending", 2: "granted", 3: "denied", 4: "revoked"}
ZERO = "0x0000000000000000000000000000000000000000"


def _hex(value: Any) -> str:
    return bytes(value).hex() if isinstance(value, bytes | bytearray) else str(value)


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    return {k: (_hex(v) if isinstance(v, bytes | bytearray) else v) for k, v in args.items()}


class Indexer:
    """Keeps a :class:`Database` in step with a :class:`Ledger`."""

    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        resolver: MetadataResolver | None = None,
        confirmations: int = 0,
        page: int = 2_000,
    ) -> None:
        self.ledger = ledger
        self.db = database
        self.resolver = resolver or MetadataResolver()
        self.confirmations = confirmations
        self.page = page
        self.reader = EventReader(ledger.chain, ledger.deployment.contracts)
        self._tokens: dict[str, int] = {}
        self._lock = threading.Lock()  # one sync at a time
        self._write = threading.Lock()  # one write transaction at a time (all writers)
        self._fetching = threading.Lock()  # one metadata retry round at a time
        # dataset -> (monotonic time of the next fetch, back-off delay after it)
        self._retry: dict[int, tuple[float, float]] = {}
        self._size_retry: dict[int, tuple[float, float]] = {}  # the same, for manifests
        self.chain_head: int | None = None  # the head seen by the last sync
        self.on_indexed: Callable[[int], None] | None = None
        self.on_progress: Callable[[int], None] | None = None
        with self.db.engine.begin() as conn:
            row = conn.execute(select(t.cursor).where(t.cursor.c.id == 1)).first()
            factory = ledger.deployment.address("Factory")
            # Chain id and address alone do not tell two development chains apart;
            # the hash of the deployment's first block does.
            start_hash = self._chain_hash(ledger.deployment.start_block) or ""
            if row is None:
                conn.execute(
                    insert(t.cursor).values(
                        id=1,
                        chain_id=ledger.chain.chain_id,
                        factory=factory,
                        start_hash=start_hash,
                        last_block=ledger.deployment.start_block - 1,
                    )
                )
            elif (row.chain_id, row.factory, row.start_hash) != (
                ledger.chain.chain_id,
                factory,
                start_hash,
            ):
                raise ConfigError(
                    "this catalog database indexes another deployment "
                    f"(chain {row.chain_id}, factory {row.factory}): use a new database"
                )
            for ds, token in conn.execute(select(t.datasets.c.id, t.datasets.c.datatoken)):
                self._tokens[token] = int(ds)
        self.reader.add_datatokens(list(self._tokens))

    # -- position ------------------------------------------------------------------------
    def last_block(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(t.cursor.c.last_block)).scalar_one())

    def _find_fork(self) -> int | None:
        """The first block to re-index if the chain no longer has what we indexed, else None.

        Only some blocks' hashes are stored (those with events, and page ends), so the
        branches may part anywhere after the newest stored block the chain still has:
        everything after it is read again, empty blocks in the gap included (a new
        branch may hold events there)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(t.blocks).order_by(t.blocks.c.number.desc())).all()
        changed = False
        for number, stored in rows:
            if self._chain_hash(int(number)) == stored:
                return int(number) + 1 if changed else None
            changed = True
        # No stored block survives: start again from the deployment.
        return self.ledger.deployment.start_block if changed else None

    def _chain_hash(self, number: int) -> str | None:
        return self.ledger.chain.block_hash(number)

    # -- the loop ------------------------------------------------------------------------
    def sync(self) -> int:
        """Index everything confirmed up to now; return how many events were added."""
        with self._lock:
            self.chain_head = self.ledger.chain.block_number
            head = self.chain_head - self.confirmations
            fork = self._find_fork()  # chain reads: outside the write transaction
            if fork is not None:
                with self._write, self.db.engine.begin() as conn:
                    self._rollback(conn, fork)
            start = self.last_block() + 1
            added = 0
            while start <= head:
                end = min(start + self.page - 1, head)
                batch = list(self.reader.read(start, end, self.page))
                headers = self.ledger.chain.block_headers({e.block_number for e in batch} | {end})
                if any(
                    e.block_hash and e.block_hash != headers[e.block_number].hash for e in batch
                ):
                    # The chain reorganised between reading the logs and the headers:
                    # store nothing of this page; the next round finds the fork.
                    break
                with self._write, self.db.engine.begin() as conn:
                    self._store(conn, batch, end, headers)
                added += len(batch)
                start = end + 1
                if self.on_progress is not None:
                    self.on_progress(end)
            if added and self.on_indexed is not None:
                self.on_indexed(added)
            return added

    def _store(
        self, conn: Connection, batch: list[Event], end: int, headers: Mapping[int, BlockHeader]
    ) -> None:
        stamps: dict[int, int] = {}
        for number, header in sorted(headers.items()):
            stamps[number] = header.timestamp
            conn.execute(delete(t.blocks).where(t.blocks.c.number == number))
            conn.execute(insert(t.blocks).values(number=number, hash=header.hash))
        # Only a few recent hashes are needed to find a fork point.
        conn.execute(delete(t.blocks).where(t.blocks.c.number < end - 512))
        for e in batch:
            dataset = self._dataset_of(e)
            conn.execute(
                insert(t.events).values(
                    block_number=e.block_number,
                    log_index=e.log_index,
                    tx_hash=e.tx_hash,
                    contract=e.contract,
                    address=e.address,
                    name=e.name,
                    dataset=dataset,
                    args=_jsonable(dict(e.args)),
                    timestamp=stamps[e.block_number],
                )
            )
            self._apply(
                conn,
                e.contract,
                e.name,
                dict(e.args),
                e.block_number,
                e.log_index,
                e.tx_hash,
                dataset,
            )
        conn.execute(update(t.cursor).where(t.cursor.c.id == 1).values(last_block=end))

    def _dataset_of(self, e: Event) -> int | None:
        if e.contract == "Datatoken":
            return self._tokens.get(e.address) or (
                int(e.args["dataset"]) if "dataset" in e.args else None
            )
        if e.contract == "DataNFT" and e.name == "Transfer":
            return int(e.args["token_id"])
        if e.contract == "DataNFT" and e.name == "DatasetCreated":
            self._tokens[str(e.args["datatoken"])] = int(e.args["dataset"])
        value = e.args.get("dataset")
        return int(value) if value is not None else None

    # -- applying events -----------------------------------------------------------------
    def _apply(
        self,
        conn: Connection,
        contract: str,
        name: str,
        a: dict[str, Any],
        block: int,
        log_index: int,
        tx: str,
        dataset: int | None,
    ) -> None:
        ds = t.datasets
        key = f"{contract}.{name}"
        if key == "DataNFT.DatasetCreated":
            conn.execute(
                insert(ds).values(
                    id=dataset,
                    owner=a["owner"],
                    datatoken=a["datatoken"],
                    version=1,
                    state=0,
                    metadata_hash=_hex(a["metadata_hash"]),
                    metadata_uri=a["metadata_uri"],
                    manifest_hash=_hex(a["manifest_hash"]),
                    merkle_root=_hex(a["merkle_root"]),
                    created_block=block,
                    updated_block=block,
                    metadata_status="pending",
                    title="",
                    description="",
                    tags=" ",
                    license="",
                    creator="",
                    columns="",
                    service_types=" ",
                    has_mock=False,
                    dp=False,
                    metadata_json=None,
                    size=None,
                    pricing="none",
                    price="0",
                    price_tokens=0.0,
                    orders=0,
                )
            )
            conn.execute(
                insert(t.versions).values(
                    dataset=dataset,
                    version=1,
                    block_number=block,
                    tx_hash=tx,
                    metadata_hash=_hex(a["metadata_hash"]),
                    manifest_hash=_hex(a["manifest_hash"]),
                    merkle_root=_hex(a["merkle_root"]),
                )
            )
            self._load_metadata(conn, int(dataset or 0))
        elif key == "DataNFT.DatasetUpdated":
            conn.execute(
                update(ds)
                .where(ds.c.id == dataset)
                .values(
                    version=a["version"],
                    metadata_hash=_hex(a["new_metadata_hash"]),
                    metadata_uri=a["metadata_uri"],
                    manifest_hash=_hex(a["new_manifest_hash"]),
                    merkle_root=_hex(a["new_merkle_root"]),
                    updated_block=block,
                    size=None,  # the new version's, once its manifest is fetched
                )
            )
            conn.execute(
                insert(t.versions).values(
                    dataset=dataset,
                    version=a["version"],
                    block_number=block,
                    tx_hash=tx,
                    metadata_hash=_hex(a["new_metadata_hash"]),
                    manifest_hash=_hex(a["new_manifest_hash"]),
                    merkle_root=_hex(a["new_merkle_root"]),
                )
            )
            self._load_metadata(conn, int(dataset or 0))
        elif key == "DataNFT.DatasetStateChanged":
            conn.execute(update(ds).where(ds.c.id == dataset).values(state=a["new_state"]))
        elif key == "DataNFT.Transfer" and a["sender"] != ZERO:
            conn.execute(update(ds).where(ds.c.id == dataset).values(owner=a["receiver"]))
        elif key == "FixedRateExchange.ExchangeCreated":
            self._price(conn, dataset, "fixed", int(a["price"]))
        elif key == "FixedRateExchange.PriceChanged":
            self._price(conn, dataset, "fixed", int(a["new_price"]))
        elif key == "FixedRateExchange.ExchangeActivated":
            price = conn.execute(select(ds.c.price).where(ds.c.id == dataset)).scalar_one()
            self._price(conn, dataset, "fixed" if a["active"] else "none", int(price))
        elif key == "Dispenser.DispenserCreated":
            self._price(conn, dataset, "free", 0)
        elif key == "Dispenser.DispenserChanged":
            self._price(conn, dataset, "free" if a["active"] else "none", 0)
        elif key == "Datatoken.OrderStarted":
            conn.execute(
                insert(t.orders).values(
                    block_number=block,
                    log_index=log_index,
                    dataset=dataset,
                    consumer=a["consumer"],
                    payer=a["payer"],
                    service_id=a["service_id"],
                    expires_at=a["expires_at"],
                    tx_hash=tx,
                )
            )
            conn.execute(update(ds).where(ds.c.id == dataset).values(orders=ds.c.orders + 1))
        elif contract == "AccessRegistry" and name.startswith("Access"):
            self._access(conn, name, a, block)
        elif contract == "ComputeRegistry" and name in _JOB_EVENTS:
            self._job(conn, name, a, block)
        elif contract == "KeyValueStore":
            conn.execute(
                insert(t.kv).values(
                    owner=a["owner"],
                    key=_hex(a["key"]),
                    version=a["version"],
                    content_hash=_hex(a.get("content_hash", bytes(32))),
                    block_number=block,
                )
            )

    def _price(self, conn: Connection, dataset: int | None, pricing: str, price: int) -> None:
        ds = t.datasets
        conn.execute(
            update(ds)
            .where(ds.c.id == dataset)
            .values(
                pricing=pricing,
                price=str(price),
                price_tokens=price / 1e18,
            )
        )

    def _access(self, conn: Connection, name: str, a: dict[str, Any], block: int) -> None:
        acc = t.access
        rid = int(a["request_id"])
        if name == "AccessRequested":
            conn.execute(
                insert(acc).values(
                    request_id=rid,
                    dataset=a["dataset"],
                    consumer=a["consumer"],
                    status="pending",
                    purpose=a["purpose"],
                    reason="",
                    expires_at=0,
                    block_number=block,
                )
            )
            return
        values: dict[str, Any] = {"block_number": block}
        if name == "AccessGranted":
            values.update(status="granted", expires_at=a["expires_at"])
        elif name == "AccessDenied":
            values.update(status="denied", reason=a["reason"])
        elif name == "AccessRevoked":
            values.update(status="revoked")
        conn.execute(update(acc).where(acc.c.request_id == rid).values(**values))

    def _job(self, conn: Connection, name: str, a: dict[str, Any], block: int) -> None:
        jobs = t.jobs
        job = int(a["job"])
        if name == "JobRecorded":
            conn.execute(
                insert(jobs).values(
                    job=job,
                    dataset=a["dataset"],
                    version=a["version"],
                    consumer=a["consumer"],
                    algorithm=_hex(a["algorithm"]),
                    params=_hex(a["params"]),
                    status="approved" if a["status"] == 2 else "pending",
                    result="",
                    epsilon_milli=0,
                    block_number=block,
                )
            )
        elif name == "JobDecided":
            conn.execute(
                update(jobs)
                .where(jobs.c.job == job)
                .values(status="approved" if a["approved"] else "denied", block_number=block)
            )
        elif name == "JobCompleted":
            conn.execute(
                update(jobs)
                .where(jobs.c.job == job)
                .values(
                    status="succeeded" if a["succeeded"] else "failed",
                    result=_hex(a["result"]),
                    epsilon_milli=a["epsilon_milli"],
                    block_number=block,
                )
            )
        elif name == "JobCancelled":  # withdrawn, or its escrow reclaimed after the deadline
            conn.execute(
                update(jobs).where(jobs.c.job == job).values(status="cancelled", block_number=block)
            )

    def _load_metadata(self, conn: Connection, dataset: int, fetched: bytes | None = None) -> None:
        """Index the dataset's metadata from a document held here (or `fetched`, already
        checked against the hash); leave it pending if there is none. No network."""
        ds = t.datasets
        row = conn.execute(
            select(ds.c.metadata_hash, ds.c.metadata_uri).where(ds.c.id == dataset)
        ).one()
        expected = bytes.fromhex(row.metadata_hash)
        raw_text = conn.execute(
            select(t.blobs.c.data).where(t.blobs.c.sha256 == row.metadata_hash)
        ).scalar()
        raw = raw_text.encode() if raw_text is not None else fetched
        if raw is None:
            conn.execute(update(ds).where(ds.c.id == dataset).values(metadata_status="pending"))
            self.db.update_fulltext(conn, dataset)
            return
        try:
            meta = parse_metadata(raw, expected)
        except MetadataError:
            conn.execute(update(ds).where(ds.c.id == dataset).values(metadata_status="invalid"))
            self.db.update_fulltext(conn, dataset)
            return
        if raw_text is None:
            conn.execute(insert(t.blobs).values(sha256=row.metadata_hash, data=raw.decode()))
        conn.execute(
            update(ds)
            .where(ds.c.id == dataset)
            .values(
                metadata_status="ok",
                title=meta.title,
                description=meta.description,
                tags=" " + " ".join(meta.tags) + " ",
                license=meta.license,
                creator=meta.creator,
                columns=" ".join(c.name for c in meta.columns or []),
                service_types=" " + " ".join(sorted({s.type for s in meta.services})) + " ",
                has_mock=meta.mock is not None,
                dp=any(s.type == "compute" and s.differential_privacy for s in meta.services),
                metadata_json=json.loads(raw),
            )
        )
        self.db.update_fulltext(conn, dataset)

    def pending_count(self) -> int:
        """How many datasets wait for their metadata document."""
        ds = t.datasets
        with self.db.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(ds).where(ds.c.metadata_status == "pending")
                ).scalar_one()
            )

    def retry_pending(self, *, due_only: bool = False) -> int:
        """Try again to find the metadata of pending datasets; return how many were found.

        Each document is fetched outside any transaction, within the resolver's
        deadline, then indexed in a short transaction of its own. With `due_only`,
        a dataset whose fetch failed is tried again only after a back-off (1 s,
        doubling up to 5 minutes): the schedule a background worker follows.
        """
        with self._fetching:
            return self._retry_pending(due_only)

    def _retry_pending(self, due_only: bool) -> int:
        ds = t.datasets
        with self.db.engine.connect() as conn:
            pending = conn.execute(
                select(ds.c.id, ds.c.metadata_hash, ds.c.metadata_uri).where(
                    ds.c.metadata_status == "pending"
                )
            ).all()
            held = {
                h
                for (h,) in conn.execute(
                    select(t.blobs.c.sha256).where(
                        t.blobs.c.sha256.in_({r.metadata_hash for r in pending})
                    )
                )
            }
        waiting = {int(r.id) for r in pending}
        self._retry = {d: v for d, v in self._retry.items() if d in waiting}
        found = 0
        for row in pending:
            dataset = int(row.id)
            now = time.monotonic()
            when, delay = self._retry.get(dataset, (now, 0.0))
            if due_only and when > now:
                continue
            raw: bytes | None = None
            if row.metadata_hash not in held:
                raw = self.resolver.resolve(row.metadata_uri, bytes.fromhex(row.metadata_hash))
                if raw is None:
                    delay = min(max(2 * delay, 1.0), 300.0)
                    self._retry[dataset] = (time.monotonic() + delay, delay)
                    continue
            with self._write, self.db.engine.begin() as conn:
                # A reorg or an update may have changed the row while we fetched.
                current = conn.execute(
                    select(ds.c.metadata_hash, ds.c.metadata_status).where(ds.c.id == dataset)
                ).first()
                if current is None or tuple(current) != (row.metadata_hash, "pending"):
                    continue
                self._load_metadata(conn, dataset, raw)
                status = conn.execute(
                    select(ds.c.metadata_status).where(ds.c.id == dataset)
                ).scalar_one()
            self._retry.pop(dataset, None)
            found += status == "ok"
        return found

    def retry_sizes(self, *, due_only: bool = False) -> int:
        """Fetch the manifests of datasets whose size is not known yet and record their
        plaintext size; return how many were found. A manifest counts only if it is the
        one the chain names (its SHA-256) and parses as one; on a miss the dataset is
        tried again after a back-off, as metadata is (with `due_only`)."""
        with self._fetching:
            return self._retry_sizes(due_only)

    def _retry_sizes(self, due_only: bool) -> int:
        from datagora.storage.errors import StorageError
        from datagora.storage.manifest import MAX_MANIFEST_BYTES, verify_manifest

        ds = t.datasets
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(ds.c.id, ds.c.manifest_hash).where(
                    ds.c.size.is_(None), ds.c.manifest_hash != "00" * 32
                )
            ).all()
        waiting = {int(r.id) for r in rows}
        self._size_retry = {d: v for d, v in self._size_retry.items() if d in waiting}
        found = 0
        for row in rows:
            dataset, digest = int(row.id), bytes.fromhex(row.manifest_hash)
            now = time.monotonic()
            when, delay = self._size_retry.get(dataset, (now, 0.0))
            if due_only and when > now:
                continue
            raw = self.resolver.fetch(datagora_uri(digest), digest, MAX_MANIFEST_BYTES)
            try:
                size = verify_manifest(raw, digest).manifest.plaintext_size if raw else None
            except StorageError:
                size = None  # the chain names a manifest that is not one: never readable
            if size is None:
                delay = min(max(2 * delay, 1.0), 300.0)
                self._size_retry[dataset] = (time.monotonic() + delay, delay)
                continue
            with self._write, self.db.engine.begin() as conn:
                # An update or a reorg may have changed the version while we fetched.
                conn.execute(
                    update(ds)
                    .where(ds.c.id == dataset, ds.c.manifest_hash == row.manifest_hash)
                    .values(size=size)
                )
            self._size_retry.pop(dataset, None)
            found += 1
        return found

    def put_metadata(self, raw: bytes) -> str:
        """Accept a metadata document (validated, canonical); index it if a dataset awaits it."""
        meta = parse_metadata(raw)
        digest = meta.digest().hex()
        with self._write, self.db.engine.begin() as conn:
            if (
                conn.execute(select(t.blobs.c.sha256).where(t.blobs.c.sha256 == digest)).first()
                is None
            ):
                conn.execute(insert(t.blobs).values(sha256=digest, data=raw.decode()))
            waiting = conn.execute(
                select(t.datasets.c.id).where(
                    t.datasets.c.metadata_hash == digest, t.datasets.c.metadata_status != "ok"
                )
            ).all()
            for (dataset,) in waiting:
                self._load_metadata(conn, int(dataset))
        return digest

    # -- reorganisations -----------------------------------------------------------------
    def _rollback(self, conn: Connection, fork: int) -> None:
        affected = sorted(
            {
                int(d)
                for (d,) in conn.execute(
                    select(t.events.c.dataset).where(
                        t.events.c.block_number >= fork, t.events.c.dataset.is_not(None)
                    )
                ).all()
            }
        )
        requests = {
            int(r.args["request_id"])
            for r in conn.execute(
                select(t.events.c.args).where(
                    t.events.c.block_number >= fork, t.events.c.contract == "AccessRegistry"
                )
            ).all()
            if "request_id" in r.args
        }
        conn.execute(delete(t.events).where(t.events.c.block_number >= fork))
        conn.execute(delete(t.blocks).where(t.blocks.c.number >= fork))
        conn.execute(delete(t.kv).where(t.kv.c.block_number >= fork))
        conn.execute(delete(t.orders).where(t.orders.c.block_number >= fork))
        conn.execute(delete(t.access).where(t.access.c.request_id.in_(requests)))
        for dataset in affected:
            token = conn.execute(
                select(t.datasets.c.datatoken).where(t.datasets.c.id == dataset)
            ).scalar()
            conn.execute(delete(t.datasets).where(t.datasets.c.id == dataset))
            conn.execute(delete(t.versions).where(t.versions.c.dataset == dataset))
            conn.execute(delete(t.orders).where(t.orders.c.dataset == dataset))
            conn.execute(delete(t.jobs).where(t.jobs.c.dataset == dataset))
            self.db.delete_fulltext(conn, dataset)
            if token is not None:
                self._tokens.pop(token, None)
        replay = conn.execute(
            select(t.events)
            .where(
                (t.events.c.dataset.in_(affected) & (t.events.c.contract != "AccessRegistry"))
                | (t.events.c.contract == "AccessRegistry")
            )
            .order_by(t.events.c.block_number, t.events.c.log_index)
        ).all()
        for r in replay:
            if r.contract == "AccessRegistry" and int(r.args.get("request_id", 0)) not in requests:
                continue
            if r.contract == "DataNFT" and r.name == "DatasetCreated":
                self._tokens[str(r.args["datatoken"])] = int(r.args["dataset"])
            self._apply(
                conn,
                r.contract,
                r.name,
                _decode_args(r.args),
                r.block_number,
                r.log_index,
                r.tx_hash,
                r.dataset,
            )
        conn.execute(update(t.cursor).where(t.cursor.c.id == 1).values(last_block=fork - 1))


_BYTES_FIELDS = {
    "metadata_hash",
    "manifest_hash",
    "merkle_root",
    "new_metadata_hash",
    "new_manifest_hash",
    "new_merkle_root",
    "old_metadata_hash",
    "old_manifest_hash",
    "old_merkle_root",
    "key",
    "content_hash",
    "previous_hash",
    "consumer_key",
}


_JOB_EVENTS = frozenset({"JobRecorded", "JobDecided", "JobCompleted", "JobCancelled"})
"""The ComputeRegistry's events about one job (``JobTermsChanged`` is about a dataset)."""


def _decode_args(args: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (bytes.fromhex(v) if k in _BYTES_FIELDS and isinstance(v, str) else v)
        for k, v in args.items()
    }


def iter_dataset_events(database: Database, dataset: int) -> Iterable[Any]:
    """The indexed events of one dataset, in chain order."""
    with database.engine.connect() as conn:
        yield from conn.execute(
            select(t.events)
            .where(t.events.c.dataset == dataset)
            .order_by(t.events.c.block_number, t.events.c.log_index)
        )
