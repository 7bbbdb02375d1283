"""Fixtures of the browser tests: Chromium (skipped with one line when missing, failed
under CI=true) and the screenshots' directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browsing import ARGS, ARTIFACTS, CHROMIUM, browser_missing


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module-scoped: Playwright's sync API runs an event loop in this process while it
    # lives, and later tests in the same worker call asyncio.run (a session-scoped
    # browser made every one of them fail with "cannot be called from a running loop").
    missing = browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
