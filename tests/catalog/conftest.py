"""Catalog fixtures: a database on SQLite and, where configured, on a real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datagora.catalog.db import Database

POSTGRES_ENV = "DATAGORA_TEST_POSTGRES_URL"


def pytest_report_header() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return f"catalog: PostgreSQL tests against {url}"
    return f"catalog: PostgreSQL tests skipped ({POSTGRES_ENV} is not set)"


def _postgres_url() -> str | None:
    """The PostgreSQL URL for this test process: with parallel workers (pytest-xdist),
    each worker gets a database of its own beside the configured one, made on first use,
    so that one worker's ``drop_all`` never empties another's tables."""
    url = os.environ.get(POSTGRES_ENV)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if exists is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def open_database(kind: str, tmp_path: Path) -> Database:
    """An empty catalog database of `kind` (sqlite or postgresql)."""
    if kind == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'catalog.db'}")
    url = _postgres_url()
    if not url:
        pytest.skip(f"PostgreSQL catalog tests need {POSTGRES_ENV} (CI sets it)")
    # Where the variable is set the server must be there: failing to connect fails.
    Database(url).drop_all()
    return Database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty catalog database on each backend."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'catalog.db'}")
    else:
        url = _postgres_url()
        if not url:
            pytest.skip(f"PostgreSQL catalog tests need {POSTGRES_ENV} (CI sets it)")
        # Where the variable is set the server must be there: failing to connect fails.
        db = Database(url)
        db.drop_all()
        db = Database(url)
    try:
        yield db
    finally:
        if request.param == "postgresql":
            db.drop_all()
        db.engine.dispose()
