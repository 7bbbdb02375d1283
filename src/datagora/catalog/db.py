"""The catalog's SQL schema, on SQLite (FTS5) or PostgreSQL (tsvector), through SQLAlchemy.

Every row derived from the ledger carries the block it came from, so a chain
reorganisation is undone by deleting rows from the fork point on and replaying
the affected datasets' remaining events (see :mod:`datagora.catalog.indexer`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from datagora.errors import ConfigError

meta = MetaData()

# The indexer's position: one row per (chain id, deployment) it follows.
cursor = Table(
    "cursor",
    meta,
    Column("id", Integer, primary_key=True),
    Column("chain_id", BigInteger, nullable=False),
    Column("factory", String(42), nullable=False),
    Column("start_hash", String(66), nullable=False),
    Column("last_block", BigInteger, nullable=False),
)

# Hashes of indexed blocks, to notice a reorganisation and find the fork point.
blocks = Table(
    "blocks",
    meta,
    Column("number", BigInteger, primary_key=True),
    Column("hash", String(66), nullable=False),
)

# Every decoded event, in chain order: the audit timeline and the replay source.
events = Table(
    "events",
    meta,
    Column("block_number", BigInteger, primary_key=True),
    Column("log_index", Integer, primary_key=True),
    Column("tx_hash", String(66), nullable=False),
    Column("contract", String(40), nullable=False),
    Column("address", String(42), nullable=False),
    Column("name", String(40), nullable=False),
    Column("dataset", BigInteger, index=True),
    Column("args", JSON, nullable=False),
    Column("timestamp", BigInteger),
)

datasets = Table(
    "datasets",
    meta,
    Column("id", BigInteger, primary_key=True),
    Column("owner", String(42), nullable=False, index=True),
    Column("datatoken", String(42), nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    Column("state", Integer, nullable=False),
    Column("metadata_hash", String(64), nullable=False),
    Column("metadata_uri", Text, nullable=False),
    Column("manifest_hash", String(64), nullable=False),
    Column("merkle_root", String(64), nullable=False),
    Column("created_block", BigInteger, nullable=False),
    Column("updated_block", BigInteger, nullable=False),
    # From the metadata document, once fetched and checked against its hash.
    Column("metadata_status", String(16), nullable=False),  # pending | ok | invalid
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("tags", Text, nullable=False),  # " tag1 tag2 " (spaces around, for LIKE filters)
    Column("license", String(64), nullable=False),
    Column("creator", Text, nullable=False),
    Column("columns", Text, nullable=False),
    Column("service_types", Text, nullable=False),  # " download compute "
    Column("has_mock", Boolean, nullable=False),
    # A compute service with differential privacy (a "DP" filter of the search).
    Column("dp", Boolean, nullable=False, server_default=text("false")),
    Column("metadata_json", JSON),
    # Plaintext bytes of the current version, from its manifest once fetched and checked
    # against the on-chain hash (NULL until then).
    Column("size", BigInteger),
    # Current sale terms, from the exchange / dispenser events.
    Column("pricing", String(8), nullable=False),  # none | fixed | free
    Column("price", Text, nullable=False),  # MarketToken base units, decimal string
    Column("price_tokens", Float, nullable=False),  # price / 1e18, for range filters
    Column("orders", Integer, nullable=False),
)
Index("datasets_license", datasets.c.license)
Index("datasets_price", datasets.c.price_tokens)

versions = Table(
    "versions",
    meta,
    Column("dataset", BigInteger, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("block_number", BigInteger, nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("metadata_hash", String(64), nullable=False),
    Column("manifest_hash", String(64), nullable=False),
    Column("merkle_root", String(64), nullable=False),
)

orders = Table(
    "orders",
    meta,
    Column("block_number", BigInteger, primary_key=True),
    Column("log_index", Integer, primary_key=True),
    Column("dataset", BigInteger, nullable=False, index=True),
    Column("consumer", String(42), nullable=False, index=True),
    Column("payer", String(42), nullable=False),
    Column("service_id", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("tx_hash", String(66), nullable=False),
)

access = Table(
    "access",
    meta,
    Column("request_id", BigInteger, primary_key=True),
    Column("dataset", BigInteger, nullable=False, index=True),
    Column("consumer", String(42), nullable=False, index=True),
    Column("status", String(10), nullable=False),  # pending | granted | denied | revoked
    Column("purpose", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("block_number", BigInteger, nullable=False),
)

kv = Table(
    "kv",
    meta,
    Column("owner", String(42), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("content_hash", String(64), nullable=False),  # zeros when removed
    Column("block_number", BigInteger, nullable=False),
)

# Compute jobs: which algorithm ran on which dataset version for whom, and its result.
jobs = Table(
    "jobs",
    meta,
    Column("job", BigInteger, primary_key=True),
    Column("dataset", BigInteger, nullable=False, index=True),
    Column("version", BigInteger, nullable=False),
    Column("consumer", String(42), nullable=False, index=True),
    Column("algorithm", String(64), nullable=False),
    Column("params", String(64), nullable=False),
    Column("status", String(10), nullable=False),  # pending approved denied succeeded failed
    Column("result", String(64), nullable=False),
    Column("epsilon_milli", BigInteger, nullable=False),
    Column("block_number", BigInteger, nullable=False),
)

# Metadata documents pushed to the catalog or fetched from their URIs, by SHA-256.
blobs = Table(
    "blobs",
    meta,
    Column("sha256", String(64), primary_key=True),
    Column("data", Text, nullable=False),
)


def has_dp(document: object) -> bool:
    """Whether a metadata document (parsed JSON) offers a compute service with
    differential privacy."""
    services = document.get("services") if isinstance(document, dict) else None
    return any(
        isinstance(s, dict) and s.get("type") == "compute" and s.get("differential_privacy") is True
        for s in services or []
    )


class Database:
    """An engine plus the dialect-specific full-text index."""

    def __init__(self, url: str) -> None:
        try:
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open catalog database {url!r}: {exc}") from None
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"the catalog runs on SQLite or PostgreSQL, not {self.dialect}")
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            with self.engine.begin() as conn:
                meta.create_all(conn)
                self._add_columns(conn)
                self._create_fulltext(conn)
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"cannot reach catalog database: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}"
            ) from None

    def _add_columns(self, conn: Connection) -> None:
        """Bring a database made by an older build up to this schema: columns added since
        (`dp`, `size`), filled from what the database holds (`size` is fetched again)."""
        present = {c["name"] for c in inspect(conn).get_columns("datasets")}
        if "dp" not in present:
            conn.execute(text("ALTER TABLE datasets ADD COLUMN dp BOOLEAN NOT NULL DEFAULT false"))
            rows = conn.execute(select(datasets.c.id, datasets.c.metadata_json)).all()
            for dataset, document in rows:
                if has_dp(document):
                    conn.execute(update(datasets).where(datasets.c.id == dataset).values(dp=True))
        if "size" not in present:
            conn.execute(text("ALTER TABLE datasets ADD COLUMN size BIGINT"))

    def _create_fulltext(self, conn: Connection) -> None:
        if self.dialect == "sqlite":
            conn.execute(
                text(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS datasets_fts USING fts5("
                    "title, description, tags, columns, tokenize='unicode61 remove_diacritics 2', "
                    # Prefix indexes: a query word matches as a prefix, and without
                    # these every short prefix expands into hundreds of terms.
                    "prefix='2 3 4')"
                )
            )
        else:
            conn.execute(text("ALTER TABLE datasets ADD COLUMN IF NOT EXISTS search tsvector"))
            conn.execute(
                text("CREATE INDEX IF NOT EXISTS datasets_search ON datasets USING GIN (search)")
            )

    def update_fulltext(self, conn: Connection, dataset: int) -> None:
        """Refresh the full-text entry of one dataset from its row."""
        if self.dialect == "sqlite":
            conn.execute(text("DELETE FROM datasets_fts WHERE rowid = :id"), {"id": dataset})
            conn.execute(
                text(
                    "INSERT INTO datasets_fts (rowid, title, description, tags, columns) "
                    "SELECT id, title, description, tags, columns FROM datasets WHERE id = :id"
                ),
                {"id": dataset},
            )
        else:
            conn.execute(
                text(
                    "UPDATE datasets SET search = "
                    "setweight(to_tsvector('simple', title), 'A') || "
                    "setweight(to_tsvector('simple', tags), 'A') || "
                    "setweight(to_tsvector('simple', columns), 'B') || "
                    "setweight(to_tsvector('simple', description), 'C') WHERE id = :id"
                ),
                {"id": dataset},
            )

    def delete_fulltext(self, conn: Connection, dataset: int) -> None:
        if self.dialect == "sqlite":
            conn.execute(text("DELETE FROM datasets_fts WHERE rowid = :id"), {"id": dataset})

    def drop_all(self) -> None:
        """Remove every catalog table (tests and re-indexing)."""
        with self.engine.begin() as conn:
            if self.dialect == "sqlite":
                conn.execute(text("DROP TABLE IF EXISTS datasets_fts"))
            meta.drop_all(conn)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the HTTP API read while the indexer writes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
