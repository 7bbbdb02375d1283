"""Search over the catalog: full text over title, description, tags and column names,
with filters, sorting and pagination, on SQLite (FTS5) or PostgreSQL (tsvector)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import select, text

from datagora.catalog import db as t
from datagora.catalog.db import Database
from datagora.catalog.errors import SearchError
from datagora.ledger import conditions
from datagora.ledger.errors import InvalidArgument

Sort = Literal["relevance", "newest", "oldest", "price_asc", "price_desc", "orders"]
SORTS: tuple[str, ...] = ("relevance", "newest", "oldest", "price_asc", "price_desc", "orders")
MAX_LIMIT = 100
MAX_ID = 2**63 - 1
"""The largest dataset id or offset the database holds (a signed 64-bit integer)."""
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class SearchQuery:
    """What to look for. Every filter is optional; `q` is matched as word prefixes (AND)."""

    q: str = ""
    tags: tuple[str, ...] = ()
    license: str | None = None
    min_price: float | None = None  # in MarketTokens (1e18 base units)
    max_price: float | None = None
    owner: str | None = None
    service: Literal["download", "compute", "dp"] | None = None
    """A service type, or "dp": a compute service with differential privacy."""
    has_mock: bool | None = None
    pricing: Literal["none", "fixed", "free"] | None = None
    include_inactive: bool = False
    sort: Sort = "relevance"
    limit: int = 20
    offset: int = 0

    def checked(self) -> SearchQuery:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise SearchError(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_ID:
            raise SearchError(f"offset must be between 0 and {MAX_ID}")
        if self.sort not in SORTS:
            raise SearchError(f"sort must be one of {', '.join(SORTS)}")
        if len(self.q) > 500:
            raise SearchError("the query is limited to 500 characters")
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise SearchError("min_price is above max_price")
        return self


@dataclass(frozen=True)
class DatasetSummary:
    id: int
    title: str
    description: str
    tags: list[str]
    license: str
    owner: str
    pricing: str
    price: str
    services: list[str]
    has_mock: bool
    differential_privacy: bool
    size: int | None
    """Plaintext bytes of the current version (None until its manifest is fetched)."""
    version: int
    state: int
    orders: int
    metadata_status: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    total: int
    items: list[DatasetSummary] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "items": [i.to_json() for i in self.items]}


def _summary(row: Any) -> DatasetSummary:
    return DatasetSummary(
        id=int(row.id),
        title=row.title,
        description=row.description[:500],
        tags=row.tags.split(),
        license=row.license,
        owner=row.owner,
        pricing=row.pricing,
        price=row.price,
        services=row.service_types.split(),
        has_mock=bool(row.has_mock),
        differential_privacy=bool(row.dp),
        size=None if row.size is None else int(row.size),
        version=int(row.version),
        state=int(row.state),
        orders=int(row.orders),
        metadata_status=row.metadata_status,
    )


def search(database: Database, query: SearchQuery) -> SearchResult:
    """Datasets matching `query`, sorted and paginated."""
    query = query.checked()
    words = [w.lower() for w in _WORD.findall(query.q)][:16]
    pg = database.dialect == "postgresql"
    where: list[str] = []
    params: dict[str, Any] = {}
    source = count_source = "datasets d"
    rank = ""
    if words:
        if pg:
            params["tsq"] = " & ".join(f"{w}:*" for w in words)
            where.append("d.search @@ to_tsquery('simple', :tsq)")
            rank = "-ts_rank(d.search, to_tsquery('simple', :tsq))"
        else:
            params["fts"] = " AND ".join(f'"{w}"*' for w in words)
            # Column weights: title 10, description 1, tags 5, column names 3.
            matches = (
                "FROM datasets_fts WHERE datasets_fts MATCH :fts) f JOIN datasets d ON d.id = f.rid"
            )
            source = (
                f"(SELECT rowid AS rid, bm25(datasets_fts, 10.0, 1.0, 5.0, 3.0) AS score {matches}"
            )
            count_source = f"(SELECT rowid AS rid {matches}"  # counting needs no ranking
            rank = "f.score"
    if not query.include_inactive:
        where.append("d.state = 0")
    for i, tag in enumerate(query.tags):
        params[f"tag{i}"] = f"% {tag.lower()} %"
        where.append(f"d.tags LIKE :tag{i}")
    if query.license is not None:
        params["license"] = query.license
        where.append("d.license = :license")
    if query.min_price is not None:
        params["min_price"] = query.min_price
        where.append("d.price_tokens >= :min_price")
    if query.max_price is not None:
        params["max_price"] = query.max_price
        where.append("d.price_tokens <= :max_price")
    if query.owner is not None:
        params["owner"] = query.owner.lower()
        where.append("lower(d.owner) = :owner")
    if query.service == "dp":
        where.append("d.dp = :dp")
        params["dp"] = True
    elif query.service is not None:
        params["service"] = f"% {query.service} %"
        where.append("d.service_types LIKE :service")
    if query.has_mock is not None:
        params["has_mock"] = query.has_mock
        where.append("d.has_mock = :has_mock")
    if query.pricing is not None:
        params["pricing"] = query.pricing
        where.append("d.pricing = :pricing")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    order = {
        # Without words there is nothing to rank by: newest first.
        "relevance": f"{rank}, d.id DESC" if rank else "d.created_block DESC, d.id DESC",
        "newest": "d.created_block DESC, d.id DESC",
        "oldest": "d.created_block, d.id",
        "price_asc": "d.price_tokens, d.id",
        "price_desc": "d.price_tokens DESC, d.id",
        "orders": "d.orders DESC, d.id",
    }[query.sort]
    params.update(limit=query.limit, offset=query.offset)
    with database.engine.connect() as conn:
        total = int(
            conn.execute(text(f"SELECT count(*) FROM {count_source}{clause}"), params).scalar_one()
        )
        rows = conn.execute(
            text(f"SELECT d.* FROM {source}{clause} ORDER BY {order} LIMIT :limit OFFSET :offset"),
            params,
        ).all()
    return SearchResult(total, [_summary(r) for r in rows])


def dataset_details(database: Database, dataset: int) -> dict[str, Any] | None:
    """Everything the catalog knows about one dataset, or None."""
    if not 0 <= dataset <= MAX_ID:
        return None  # no such row can exist (and the driver would overflow)
    with database.engine.connect() as conn:
        row = conn.execute(select(t.datasets).where(t.datasets.c.id == dataset)).first()
        if row is None:
            return None
        versions = conn.execute(
            select(t.versions).where(t.versions.c.dataset == dataset).order_by(t.versions.c.version)
        ).all()
        requests = conn.execute(
            select(t.access.c.status, t.access.c.request_id).where(t.access.c.dataset == dataset)
        ).all()
        jobs = conn.execute(
            select(t.jobs).where(t.jobs.c.dataset == dataset).order_by(t.jobs.c.job)
        ).all()
        condition_events = conn.execute(
            select(t.events.c.args, t.events.c.block_number)
            .where(
                t.events.c.dataset == dataset,
                t.events.c.contract == "AccessRegistry",
                t.events.c.name == "ConditionSet",
            )
            .order_by(t.events.c.block_number, t.events.c.log_index)
        ).all()
    details = _summary(row).to_json()
    details.update(
        datatoken=row.datatoken,
        metadata_hash=row.metadata_hash,
        metadata_uri=row.metadata_uri,
        manifest_hash=row.manifest_hash,
        merkle_root=row.merkle_root,
        created_block=int(row.created_block),
        metadata=row.metadata_json,
        versions=[
            {
                "version": int(v.version),
                "block": int(v.block_number),
                "tx": v.tx_hash,
                "metadata_hash": v.metadata_hash,
                "manifest_hash": v.manifest_hash,
                "merkle_root": v.merkle_root,
            }
            for v in versions
        ],
        requests={
            s: sum(1 for r in requests if r.status == s)
            for s in ("pending", "granted", "denied", "revoked")
        },
        jobs=[
            {
                "job": int(j.job),
                "version": int(j.version),
                "consumer": j.consumer,
                "algorithm": j.algorithm,
                "status": j.status,
                "result": j.result,
                "epsilon": j.epsilon_milli / 1000,
            }
            for j in jobs
        ],
        conditions=_conditions(condition_events),
    )
    return details


def _conditions(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The access condition in force per service, from its ConditionSet events (the last
    one wins; an empty one clears it)."""
    latest: dict[int, tuple[dict[str, Any], int]] = {}
    for r in rows:
        latest[int(r.args["service"])] = (r.args, int(r.block_number))
    out = []
    for service, (args, block) in sorted(latest.items()):
        blob = bytes.fromhex(str(args.get("condition", "")).removeprefix("0x"))
        if not blob:
            continue
        try:
            rendered: str | None = conditions.render(conditions.decode(blob))
        except InvalidArgument:
            rendered = None  # proxies refuse everyone under it; say it is unreadable
        out.append(
            {
                "service": service,
                "condition": rendered,
                "hash": str(args.get("condition_hash", "")).removeprefix("0x"),
                "encoded": blob.hex(),
                "block": block,
            }
        )
    return out
