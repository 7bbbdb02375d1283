"""The catalog as a real node process: indexing from anvil, HTTP API, `search` and `show`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from datagora.ledger import Chain, Ledger, PublishParams, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ports import free_port
from datagora.storage.metadata import build_metadata


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, str]]:
    tmp = tmp_path_factory.mktemp("catalog")
    with Anvil() as node:
        ledger = Ledger.deploy(Chain.rpc(node.url), dev_account(0))
        ledger.deployment.save(tmp / "deployment.json")
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "datagora",
                "node",
                "--roles",
                "catalog",
                "--port",
                str(port),
                "--data",
                str(tmp),
                "--rpc",
                node.url,
                "--deployment",
                str(tmp / "deployment.json"),
            ],
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield ledger, url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datagora", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def wait_for(url: str, q: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.get(url + "/datasets", params={"q": q}).json()
        if r["total"]:
            return r
        time.sleep(0.05)
    raise AssertionError(f"{q!r} never became searchable")


def test_publish_is_searchable_over_http_and_cli(catalog: tuple[Ledger, str]) -> None:
    ledger, url = catalog
    meta = build_metadata(
        {
            "title": "Wisconsin tumour features",
            "license": "CC0-1.0",
            "creator": "x",
            "tags": ["oncology"],
            "columns": [{"name": "radius_mean", "type": "float"}],
            "services": [{"id": 0, "type": "download"}],
        }
    )
    assert (
        httpx.put(f"{url}/metadata/{meta.digest().hex()}", content=meta.to_bytes()).status_code
        == 201
    )
    dataset = ledger.factory.publish(
        dev_account(1), PublishParams(metadata_hash=meta.digest())
    ).dataset
    found = wait_for(url, "radius")  # column names are searched too
    assert found["items"][0]["id"] == dataset  # type: ignore[index]
    result = cli("search", "wisconsin tum", "--tag", "oncology", "--catalog", url, "--json")
    assert result.returncode == 0, result.stderr
    assert [i["id"] for i in json.loads(result.stdout)["items"]] == [dataset]
    shown = cli("show", str(dataset), "--catalog", url, "--json")
    assert (
        shown.returncode == 0 and json.loads(shown.stdout)["metadata_hash"] == meta.digest().hex()
    )
    missing = cli("show", "9999", "--catalog", url)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1


def test_http_errors_are_clear_and_change_nothing(catalog: tuple[Ledger, str]) -> None:
    _, url = catalog
    assert httpx.get(url + "/openapi.json").json()["info"]["title"] == "datagora catalog"
    assert httpx.get(url + "/datasets", params={"limit": 1000}).status_code == 422
    assert httpx.get(url + "/datasets", params={"sort": "random"}).status_code == 422
    bad = httpx.get(url + "/datasets", params={"min_price": 5, "max_price": 1})
    assert bad.status_code == 400 and "min_price" in bad.json()["detail"]
    body = b'{"title":"x"}'
    wrong = httpx.put(f"{url}/metadata/{'00' * 32}", content=body)
    assert wrong.status_code == 422 and "SHA-256" in wrong.json()["detail"]
    invalid = httpx.put(f"{url}/metadata/{hashlib.sha256(body).hexdigest()}", content=body)
    assert invalid.status_code == 422 and "metadata" in invalid.json()["detail"]
    assert httpx.get(f"{url}/metadata/{hashlib.sha256(body).hexdigest()}").status_code == 404
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["lag_blocks"] is not None
