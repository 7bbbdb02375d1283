"""`datagora audit --verify` with every source down: it must not say "verified"."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datagora.catalog.resolver import datagora_uri
from datagora.ledger import Ledger
from datagora.ledger.anvil import Anvil
from datagora.node.network import Network
from datagora.ports import free_port
from helpers import publish


@pytest.fixture
def anvil_ledger(_anvil_ledger: Ledger) -> Iterator[Ledger]:
    snapshot = _anvil_ledger.chain.snapshot()
    try:
        yield _anvil_ledger
    finally:
        _anvil_ledger.chain.revert(snapshot)


def audit(network: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datagora", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATAGORA_NETWORK": str(network), "COLUMNS": "200"},
    )


def test_verify_with_every_source_down_is_not_verified(
    anvil_ledger: Ledger, anvil: Anvil, tmp_path: Path
) -> None:
    digest = hashlib.sha256(b"metadata nobody serves").digest()
    dataset = publish(anvil_ledger, metadata_hash=digest, metadata_uri=datagora_uri(digest)).dataset
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]  # nothing listens there
    network = tmp_path / "network.json"
    Network(
        chain_url=anvil.url,
        deployment=anvil_ledger.deployment,
        storage=dead,
    ).save(network)

    refused = audit(network, str(dataset), "--verify")
    assert refused.returncode != 0
    assert "verified" not in (refused.stdout + refused.stderr).lower()
    assert "checked 0, unavailable 2, mismatched 0" in refused.stdout
    assert refused.stderr.count("\n") == 1 and "--allow-partial" in refused.stderr

    partial = audit(network, str(dataset), "--verify", "--allow-partial")
    assert partial.returncode == 0, partial.stderr
    assert "verified" not in partial.stdout.lower()
    assert "checked 0, unavailable 2, mismatched 0" in partial.stdout

    as_json = audit(network, str(dataset), "--verify", "--allow-partial", "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)["verify"]
    assert (report["checked"], report["unavailable"], report["mismatches"]) == (0, 2, 0)
    assert report["complete"] is False
