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


def test_the_storage_node_survives_authenticated_fuzzing(tmp_path: Path) -> None:
    """A schemathesis hook signs every fuzzed share or placement upload as an account
    with a quota (half the time named by its body's SHA-256, so it can be stored): the
    fuzzing reaches the quota, the size caps, the store and placement parsing."""
    import hashlib
    import itertools

    from datagora.ledger import dev_account
    from datagora.node.apps import storage_app
    from datagora.storage.auth import AUTH_HEADER, DEFAULT_CHAIN_ID, WriteSigner

    writer = WriteSigner(dev_account(3))
    server = ThreadServer(
        lambda: storage_app(tmp_path, 1 << 16, grants={writer.address: 1 << 20}), "storage"
    ).start()
    url = server.url
    turn = itertools.count()
    statuses: dict[int, int] = {}

    def sign(case: Any) -> Any:
        name = (case.path_parameters or {}).get("name")
        body = getattr(case.body, "data", case.body)  # schemathesis wraps binary bodies
        if case.method != "PUT" or name is None or not isinstance(body, bytes):
            return case
        if next(turn) % 2 == 0:
            name = case.path_parameters["name"] = hashlib.sha256(body).hexdigest()
        path = case.path.replace("{name}", name)
        header = writer.header(url, "PUT", path, bytes.fromhex(name), len(body), DEFAULT_CHAIN_ID)
        case.headers = {**(case.headers or {}), **header}
        return case

    try:

        def held() -> tuple[int, int]:
            health = httpx.get(f"{url}/health").json()
            return health["shares"], health["bytes"]

        last = [held()]

        def refused_changes_nothing(case: Any, response: Any) -> None:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if case.method == "PUT":
                now = held()
                if response.status_code >= 400:
                    assert now == last[0], (case.path, response.status_code)
                last[0] = now

        report = fuzz(url, after_each=refused_changes_nothing, sign=sign)
    finally:
        server.stop()
    print(
        f"storage (signed): {len(report.operations)} operations, {report.examples} "
        f"examples, statuses {dict(sorted(statuses.items()))}"
    )
    assert not report.failures, "\n\n".join(report.failures)
    assert statuses.get(201, 0) >= 1, statuses  # signed, named by its hash: stored
    assert AUTH_HEADER == "x-datagora-write"
