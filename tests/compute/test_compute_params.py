"""Every integer path parameter of the compute node has a declared range: an id out of
range is a 422 saying so, never a 500 from SQLite or a contract call."""

from __future__ import annotations

from pathlib import Path

import httpx
from compute_helpers import identity, running

from datagora.compute import Limits, Sandbox
from datagora.ledger import Ledger
from helpers import OWNER


def test_out_of_range_ids_are_422(embedded_ledger: Ledger, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with running(
        ledger=embedded_ledger,
        operator=identity(OWNER),
        datasets={},
        data_dir=tmp_path / "node",
        sandbox=Sandbox(Limits(cpu_s=5, wall_s=5, memory_bytes=1 << 30), scratch_dir=scratch),
        owner_token="owner-secret",
    ) as node:
        owner = {"Authorization": "Bearer owner-secret"}
        big, account = 2**63, "0x" + "ab" * 20
        for method, path, headers in (
            ("GET", "/datasets/-1", {}),
            ("GET", f"/datasets/{big}", {}),
            ("GET", f"/budget/-1/{account}", {}),
            ("GET", f"/budget/{big}/{account}", {}),
            ("GET", "/budget/1/x", {}),
            ("GET", f"/jobs/{big}", {}),
            ("GET", f"/jobs/{big}/logs", {}),
            ("GET", f"/jobs/{big}/result", {}),
            ("GET", f"/owner/jobs/{big}/review", owner),
            ("POST", f"/owner/jobs/{big}/approve", owner),
            ("POST", f"/owner/jobs/{big}/deny", owner),
            ("POST", "/owner/jobs/-1/deny", owner),
        ):
            r = httpx.request(method, node.url + path, headers=headers)
            assert r.status_code == 422, (method, path, r.status_code, r.text)
            assert r.json()["detail"], r.text
        # In range, unknown: a 4xx that says so, not a 500.
        assert httpx.get(f"{node.url}/datasets/{big - 1}").status_code == 404
        r = httpx.get(f"{node.url}/owner/jobs/{big - 1}/review", headers=owner)
        assert 400 <= r.status_code < 500, r.text
