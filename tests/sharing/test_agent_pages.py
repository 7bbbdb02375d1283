"""`GET /delegations` returns pages: every delegation once, in the order made, however
many there are, and out-of-range parameters are refused with a 422 and a reason."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from datagora.ledger import Ledger
from datagora.node.apps import agent_app
from datagora.node.connect import dev_identity
from datagora.sharing.agent import PAGE_MAX

OWNER = dev_identity(1)


def test_delegations_come_a_page_at_a_time(embedded_ledger: Ledger, tmp_path: Path) -> None:
    app = agent_app(embedded_ledger, OWNER, ["http://127.0.0.1:9"], 1, tmp_path / "agent", 3600.0)
    agent = app.state.agent
    with agent._lock:
        for i in range(23):
            agent._db.execute(
                "INSERT INTO delegations VALUES (?,?,?,?,?,?,?,?,?,?)",
                (str(i + 1), 1, f"0x{i:040x}", b"k", "order", "0", 1, json.dumps([]), i, b""),
            )
        agent._db.commit()
    client = TestClient(app)  # no lifespan: the ledger follower does not run

    seen: list[int] = []
    cursor: int | None = 0
    pages = 0
    while cursor is not None:
        r = client.get("/delegations", params={"limit": 5, "cursor": cursor})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 5
        seen += [item["dataset"] for item in body["items"]]
        cursor, pages = body["next"], pages + 1
    assert seen == list(range(1, 24)) and pages == 5  # 5+5+5+5+3: the short page ends it
    assert client.get("/delegations").json()["items"][0]["dataset"] == 1
    assert client.get("/health").json()["delegations"] == 23

    for bad in (
        {"limit": 0},
        {"limit": PAGE_MAX + 1},
        {"cursor": -1},
        {"cursor": 2**63},
        {"cursor": "x"},
    ):
        r = client.get("/delegations", params=bad)
        assert r.status_code == 422 and r.json()["detail"], (bad, r.text)
