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


def open_database(kind: str, tmp_path: Path) -> Database:
    """An empty catalog database of `kind` (sqlite or postgresql)."""
    if kind == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'catalog.db'}")
    url = os.environ.get(POSTGRES_ENV)
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
        url = os.environ.get(POSTGRES_ENV)
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
