"""The storage node fuzzed from its own OpenAPI schema (schemathesis, a few cases per
operation): no 5xx, no hang, every status documented and every refusal explained,
and refused writes store nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from datagora.node.inprocess import ThreadServer
from datagora.storage.node import create_storage_app
from schemafuzz import EXAMPLES, fuzz


def test_the_storage_node_survives_fuzzing_from_its_schema(tmp_path: Path) -> None:
    server = ThreadServer(lambda: create_storage_app(tmp_path, 1 << 16), "storage").start()
    try:
        url = server.url

        def held() -> tuple[int, int]:
            health = httpx.get(f"{url}/health").json()
            return health["shares"], health["bytes"]

        def refused_changes_nothing(case: Any, response: Any) -> None:
            # Shares are content-addressed: only a body that hashes to its name is kept,
            # so the fuzzer's writes are all refused and nothing may appear.
            if case.method == "PUT" and response.status_code >= 400:
                assert held() == (0, 0), (case.path, response.status_code)

        report = fuzz(url, after_each=refused_changes_nothing)
    finally:
        server.stop()
    print(f"storage: {len(report.operations)} operations, {report.examples} examples")
    assert not report.failures, "\n\n".join(report.failures)
    assert len(report.operations) >= 9, report.operations
    assert report.examples >= EXAMPLES * len(report.operations)
