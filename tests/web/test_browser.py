"""The marketplace's pages in headless Chromium against `datagora up`'s network:
search, a dataset's timeline, a buyer's wallet purchase, an owner's grant.

The wallet is anvil's: the page's window.ethereum forwards to the chain, whose
unlocked development accounts send the transactions and sign the EIP-712 messages
(the permit, the consumer key), as a browser wallet would after the user clicks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsing import LyingWebNode, browser_missing, wallet_page

pytestmark = [pytest.mark.slow, pytest.mark.anvil]
DEADLINE = 300.0


class Net:
    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.dir = directory
        self.env = env
        self.info: dict[str, Any] = {}

    def cli(self, *args: str) -> Any:
        r = subprocess.run(
            [sys.executable, "-m", "datagora", *args, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert r.returncode == 0, f"datagora {' '.join(args)}: {r.stderr[-1500:]}"
        return json.loads(r.stdout)

    @property
    def web(self) -> str:
        return str(self.info["web"])

    @property
    def rpc(self) -> str:
        return str(self.info["chain_url"])


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    if browser_missing() and os.environ.get("CI") != "true":
        pytest.skip(browser_missing() or "")
    base = tmp_path_factory.mktemp("webnet")
    directory = base / "net"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATAGORA_KEYS_DIR", "DATAGORA_PASSWORD", "DATAGORA_ACCOUNT")
    }
    env["DATAGORA_NETWORK"] = str(directory / "network.json")
    log = open(base / "up.log", "ab")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [sys.executable, "-m", "datagora", "up", "--dir", str(directory),
         "--proxies", "2", "--threshold", "2", "--allow-weak-sandbox"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            assert process.poll() is None, (base / "up.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the network did not start"
            if (directory / "network.json").exists() and "ready:" in (base / "up.log").read_text():
                break
            time.sleep(1)
        info = json.loads((directory / "network.json").read_text())
        env.update(
            DATAGORA_KEYS_DIR=str(directory / "keys"),
            DATAGORA_PASSWORD=(directory / "password").read_text().strip(),
        )
        n = Net(directory, env)
        n.info = info
        (base / "cohort.csv").write_text("age,bp\n51,120\n63,135\n47,118\n")
        (base / "mock.csv").write_text("age,bp\n40,110\n70,150\n")
        n.cli("publish", str(base / "cohort.csv"), "--title", "Heart cohort", "--tag", "medical",
              "--price", "1.5", "--mock", str(base / "mock.csv"), "--account", "owner")  # fmt: skip
        (base / "secret.bin").write_bytes(os.urandom(50_000))
        n.cli("publish", str(base / "secret.bin"), "--title", "Approval only data",
              "--approval", "--account", "owner")  # fmt: skip
        compute_meta = {
            "title": "Cohort for compute", "license": "CC-BY-4.0", "creator": "owner",
            "services": [{"id": 0, "type": "compute", "price": "0", "policy": "approval"}],
        }  # fmt: skip
        (base / "compute.json").write_text(json.dumps(compute_meta))
        n.cli("publish", str(base / "cohort.csv"), "--metadata", str(base / "compute.json"),
              "--free", "--account", "owner")  # fmt: skip
        # The catalog indexes in the background: wait until all are searchable.
        while httpx.get(f"{info['catalog']}/datasets").json()["total"] < 3:
            assert time.monotonic() < deadline, "the catalog did not index the datasets"
            time.sleep(0.5)
        yield n
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _account(name: str, net: Net) -> str:
    from datagora.ledger import dev_account
    from datagora.node.launcher import OWNER, RESEARCHER

    return str(dev_account({"owner": OWNER, "researcher": RESEARCHER}[name]).address)


def _python_consumer_key(address: str, chain_id: int) -> str:
    """The consumer key of docs/sharing.md's wallet scheme, derived in Python (eth-account
    signs as a wallet would, deterministically): what the page must derive too."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from eth_account import Account
    from eth_account.messages import encode_typed_data
    from umbral_pre import SecretKeyFactory

    from datagora.ledger import dev_account

    account = next(dev_account(i) for i in range(10) if dev_account(i).address == address)
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "ConsumerKey": [
                {"name": "purpose", "type": "string"},
                {"name": "account", "type": "address"},
            ],
        },
        "primaryType": "ConsumerKey",
        "domain": {"name": "datagora", "version": "1", "chainId": chain_id},
        "message": {
            "purpose": "datagora consumer key v1: sign only on a datagora page or tool",
            "account": address,
        },
    }
    signature = Account.sign_message(encode_typed_data(full_message=typed), account.key).signature
    seed = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"datagora", info=b"umbral consumer key v1"
    ).derive(bytes(signature[:64]))
    secret = SecretKeyFactory.from_secure_randomness(seed).make_key(b"datagora-consumer-v1")
    return bytes(secret.public_key().to_compressed_bytes()).hex()


def _ledger(net: Net) -> Any:
    from datagora.ledger import Ledger

    return Ledger.connect(net.rpc, net.dir / "deployment.json")


def test_search_finds_a_published_dataset(browser: Any, net: Net, artifacts: Path) -> None:
    page = browser.new_page()
    page.goto(f"{net.web}/")
    page.get_by_label("Search", exact=True).fill("heart")
    # htmx updates the results as one types (the button works without JavaScript).
    page.wait_for_function(
        "document.getElementById('result-count').textContent.startsWith('1 dataset')"
    )
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**q=heart**")
    results = page.get_by_role("list", name="Search results")
    assert results.get_by_role("link", name="Heart cohort").is_visible()
    assert "Approval only data" not in results.inner_text()
    assert "1 dataset found" in page.locator("#result-count").inner_text()
    page.screenshot(path=str(artifacts / "search.png"), full_page=True)
    # Filters: free finds only the free one (the others are paid, or not for sale).
    page.goto(f"{net.web}/?cost=free")
    assert "1 dataset found" in page.locator("#result-count").inner_text()
    assert "Cohort for compute" in page.inner_text("main")
    page.goto(f"{net.web}/?cost=paid&service=download&sort=price_desc")
    assert "Heart cohort" in page.inner_text("main")
    assert "Cohort for compute" not in page.inner_text("main")
    page.goto(f"{net.web}/?min_price=abc")
    assert "is not a number" in page.inner_text("main")
    # The size: the catalog reads it from the manifest the chain names (in the background).
    size = len((net.dir.parent / "cohort.csv").read_bytes())

    def indexed_size() -> Any:
        found = httpx.get(f"{net.info['catalog']}/datasets", params={"q": "heart"}).json()
        return found["items"][0]["size"]

    deadline = time.monotonic() + 60
    while indexed_size() != size:
        assert time.monotonic() < deadline, "the catalog did not record the size"
        time.sleep(0.5)
    page.goto(f"{net.web}/?q=heart")
    shown = page.locator("ol.results dt:text-is('Size') + dd").first.inner_text()
    assert shown == f"{size} bytes", shown
    page.close()


def test_dataset_page_shows_its_timeline(browser: Any, net: Net, artifacts: Path) -> None:
    page = browser.new_page()
    page.goto(f"{net.web}/datasets/1")
    assert page.get_by_role("heading", name="Heart cohort", level=1).is_visible()
    timeline = page.locator("#timeline li")
    assert timeline.count() >= 2
    created = page.locator("#timeline li.kind-created")
    assert created.count() == 1
    tx = created.locator("code").inner_text()
    versions = _ledger(net)
    assert tx.startswith("0x") and len(tx) == 66
    assert versions.chain.transaction_receipt(tx)["status"] == 1
    assert page.locator(".prov svg g.prov-activity").count() >= 1
    assert "40,110" in page.locator("pre.mock").inner_text()  # the mock preview
    assert "datagora download 1" in page.inner_text("main")
    page.screenshot(path=str(artifacts / "dataset.png"), full_page=True)
    page.close()


def test_a_buyer_buys_with_a_wallet(browser: Any, net: Net, artifacts: Path) -> None:
    buyer = _account("researcher", net)
    ledger = _ledger(net)
    token = ledger.datatoken(1)
    assert not token.has_valid_order(buyer, 0)
    paid_before = ledger.market_token.balance_of(buyer)
    page = wallet_page(browser, net.rpc, buyer)
    page.goto(f"{net.web}/datasets/1")
    button = page.get_by_role("button", name="Buy and order service 0")
    button.wait_for(state="visible", timeout=30_000)
    button.click()
    page.wait_for_function("document.body.dataset.ordered", timeout=60_000)
    assert "Ordered: transaction" in page.locator("#notice").inner_text()
    assert token.has_valid_order(buyer, 0)
    assert ledger.market_token.balance_of(buyer) < paid_before
    # The order carries the consumer key derived in the page from the wallet's signature.
    key = page.evaluate(
        "async () => Array.from((await window.datagora.consumerKey()).publicKey)"
        ".map(b => b.toString(16).padStart(2, '0')).join('')"
    )
    assert key == _python_consumer_key(buyer, ledger.chain.chain_id)
    page.goto(f"{net.web}/account?address={buyer}")
    assert page.locator("#h-orders + table tbody tr").first.inner_text().startswith("1")
    page.screenshot(path=str(artifacts / "buyer-account.png"), full_page=True)
    assert not page.errors, page.errors
    page.context.close()


def test_the_buyer_downloads_in_the_page_byte_for_byte(
    browser: Any, net: Net, artifacts: Path, tmp_path: Path
) -> None:
    """After the purchase above: key from the proxies, shares verified, AES-GCM in the
    page; the saved file equals the published one."""
    buyer = _account("researcher", net)
    page = wallet_page(browser, net.rpc, buyer)
    page.goto(f"{net.web}/datasets/1")
    button = page.get_by_role("button", name="Download and decrypt in this page")
    button.wait_for(state="visible", timeout=30_000)
    with page.expect_download(timeout=120_000) as info:
        button.click()
    saved = tmp_path / "saved.csv"
    info.value.save_as(saved)
    assert saved.read_bytes() == (net.dir.parent / "cohort.csv").read_bytes()
    page.wait_for_function(
        "document.getElementById('download-status').textContent.startsWith('Saved')"
    )
    page.screenshot(path=str(artifacts / "download.png"), full_page=True)
    assert not page.errors, page.errors
    page.context.close()


def test_a_web_node_lying_about_the_manifest_is_refused(
    browser: Any, net: Net, artifacts: Path
) -> None:
    """The page reads the dataset's commitment from the chain through the wallet: a web
    node naming another manifest (one it forged, with the real shares and Merkle root) is
    caught before any key is asked for."""
    liar = LyingWebNode(net.web, 1)
    try:
        page = wallet_page(browser, net.rpc, _account("researcher", net))
        page.goto(f"{liar.url}/datasets/1")
        assert page.locator("#dataset").get_attribute("data-manifest") == liar.forged_name
        button = page.get_by_role("button", name="Download and decrypt in this page")
        button.wait_for(state="visible", timeout=30_000)
        button.click()
        page.wait_for_function(
            "document.getElementById('download-status').textContent.includes('refused')",
            timeout=120_000,
        )
        status = page.locator("#download-status").inner_text()
        assert "but the chain records manifest " + liar.real[:12] in status, status
        assert liar.forged_name[:12] in status
        page.screenshot(path=str(artifacts / "download-lying-web-node.png"), full_page=True)
        page.context.close()
    finally:
        liar.close()


def test_a_download_without_access_is_refused_with_a_clear_message(
    browser: Any, net: Net, artifacts: Path
) -> None:
    from datagora.ledger import dev_account

    stranger = str(dev_account(3).address)  # never ordered, never granted
    page = wallet_page(browser, net.rpc, stranger)
    page.goto(f"{net.web}/datasets/1")
    button = page.get_by_role("button", name="Download and decrypt in this page")
    button.wait_for(state="visible", timeout=30_000)
    button.click()
    page.wait_for_function(
        "document.getElementById('download-status').textContent.includes('refuse')",
        timeout=120_000,
    )
    assert "The proxies refuse the key" in page.locator("#download-status").inner_text()
    page.screenshot(path=str(artifacts / "download-refused.png"), full_page=True)
    page.context.close()


def test_an_owner_grants_a_request_from_the_page_then_revokes_it(
    browser: Any, net: Net, artifacts: Path, tmp_path: Path
) -> None:
    """The researcher asks from the page (with the wallet-derived key), the owner grants
    from the page, the researcher downloads in the page; the owner revokes, and the
    researcher's next download is refused with a clear message."""
    from datagora.ledger.access import RequestStatus

    owner, researcher = _account("owner", net), _account("researcher", net)
    ledger = _ledger(net)
    asker = wallet_page(browser, net.rpc, researcher)
    asker.goto(f"{net.web}/datasets/2")
    purpose = asker.get_by_label("Or ask the owner for access — your purpose")
    purpose.wait_for(state="visible", timeout=30_000)
    purpose.fill("a tumour classifier")
    asker.get_by_role("button", name="Request access").click()
    asker.wait_for_function(
        "document.getElementById('notice').textContent.startsWith('Access requested')",
        timeout=60_000,
    )
    request_id = ledger.access.latest_request(2, researcher)
    assert ledger.access.get_request(request_id).status is RequestStatus.PENDING

    page = wallet_page(browser, net.rpc, owner)
    page.goto(f"{net.web}/account?address={owner}")
    row = page.locator(f"#request-{request_id}")
    assert "a tumour classifier" in row.inner_text()
    grant = row.get_by_role("button", name="Grant")
    grant.wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(artifacts / "owner-requests.png"), full_page=True)
    grant.click()
    page.wait_for_function(
        f"document.querySelector('#request-{request_id} .status').textContent === 'granted'",
        timeout=60_000,
    )
    assert ledger.access.get_request(request_id).status is RequestStatus.GRANTED
    page.reload()
    assert "granted" in page.locator(f"#request-{request_id} .status").inner_text()
    assert "1.4" in page.locator("#earned").inner_text()  # the sale above, less its fees
    page.screenshot(path=str(artifacts / "owner-granted.png"), full_page=True)

    asker.goto(f"{net.web}/datasets/2")
    button = asker.get_by_role("button", name="Download and decrypt in this page")
    button.wait_for(state="visible", timeout=30_000)
    with asker.expect_download(timeout=120_000) as info:
        button.click()
    saved = tmp_path / "granted.bin"
    info.value.save_as(saved)
    assert saved.read_bytes() == (net.dir.parent / "secret.bin").read_bytes()

    revoke = page.locator(f"#request-{request_id}").get_by_role("button", name="Revoke")
    revoke.wait_for(state="visible", timeout=30_000)
    revoke.click()
    page.wait_for_function(
        f"document.querySelector('#request-{request_id} .status').textContent === 'revoked'",
        timeout=60_000,
    )
    assert ledger.access.get_request(request_id).status is RequestStatus.REVOKED
    asker.goto(f"{net.web}/datasets/2")
    button = asker.get_by_role("button", name="Download and decrypt in this page")
    button.wait_for(state="visible", timeout=30_000)
    button.click()
    asker.wait_for_function(
        "document.getElementById('download-status').textContent.includes('refuse')",
        timeout=120_000,
    )
    refused = asker.locator("#download-status").inner_text()
    assert "The proxies refuse the key" in refused and "revoked" in refused, refused
    asker.screenshot(path=str(artifacts / "download-revoked.png"), full_page=True)
    assert not page.errors, page.errors
    page.context.close()
    asker.context.close()


def test_an_owner_denies_a_request_with_a_reason(browser: Any, net: Net, artifacts: Path) -> None:
    from datagora.ledger.access import RequestStatus

    owner = _account("owner", net)
    filed = net.cli("request", "2", "--purpose", "resale", "--account", "researcher")
    request_id = int(filed["request"])
    ledger = _ledger(net)
    page = wallet_page(browser, net.rpc, owner)
    page.goto(f"{net.web}/account?address={owner}")
    row = page.locator(f"#request-{request_id}")
    field = row.get_by_label("Reason")
    field.wait_for(state="visible", timeout=30_000)
    field.fill("resale is not allowed")
    row.get_by_role("button", name="Deny").click()
    page.wait_for_function(
        f"document.querySelector('#request-{request_id} .status').textContent === 'denied'",
        timeout=60_000,
    )
    assert ledger.access.get_request(request_id).status is RequestStatus.DENIED
    page.reload()
    assert "denied: resale is not allowed" in row.inner_text()  # the reason, from the chain
    page.screenshot(path=str(artifacts / "owner-denied.png"), full_page=True)
    assert not page.errors, page.errors
    page.context.close()


ALGORITHM = """
import json


def run(inputs, params, output_dir):
    (item,) = inputs.values()
    (output_dir / "rows.json").write_text(json.dumps({"rows": len(item.frame)}))
"""


def test_a_job_submitted_approved_and_fetched_in_pages(
    browser: Any, net: Net, artifacts: Path, tmp_path: Path
) -> None:
    """The researcher orders the compute service and submits a job from the page; the
    owner reviews the code and approves it from the page; the researcher follows it and
    fetches its result, opened in the page with the wallet-derived key."""
    import io
    import tarfile

    owner, researcher = _account("owner", net), _account("researcher", net)
    ledger = _ledger(net)
    algorithm = tmp_path / "rows.py"
    algorithm.write_text(ALGORITHM)
    consumer = wallet_page(browser, net.rpc, researcher)
    consumer.goto(f"{net.web}/datasets/3")
    get = consumer.get_by_role("button", name="Get service 0")
    get.wait_for(state="visible", timeout=30_000)
    get.click()
    consumer.wait_for_function("document.body.dataset.ordered", timeout=60_000)
    consumer.get_by_label(
        "Algorithm file (Python, defines run(inputs, params, output_dir))"
    ).set_input_files(str(algorithm))
    consumer.get_by_label("Parameters (a JSON object)").fill('{"label": "rows"}')
    consumer.get_by_role("button", name="Submit the job").click()
    consumer.wait_for_function("document.body.dataset.job", timeout=60_000)
    job = int(consumer.evaluate("document.body.dataset.job"))
    assert "pending" in consumer.locator("#job-status").inner_text()
    assert ledger.compute.job(job).status == 1  # pending: the owner reviews it

    page = wallet_page(browser, net.rpc, owner)
    page.goto(f"{net.web}/account?address={owner}")
    row = page.locator(f"#job-{job}")
    assert "pending" in row.locator(".status").inner_text()
    review = row.get_by_role("button", name="Review the code")
    review.wait_for(state="visible", timeout=30_000)
    review.click()
    code = page.locator(f"#code-{job}")
    code.wait_for(state="visible", timeout=30_000)
    assert "def run(inputs, params, output_dir)" in code.inner_text()  # the code shown
    assert '{"label":"rows"}' in code.inner_text()  # and its parameters
    page.screenshot(path=str(artifacts / "owner-job-review.png"), full_page=True)
    row.get_by_role("button", name="Approve").click()
    page.wait_for_function(
        f"document.querySelector('#job-{job} .status').textContent === 'approved'",
        timeout=60_000,
    )
    assert ledger.compute.job(job).status in (2, 4, 5)  # approved (then run)
    page.screenshot(path=str(artifacts / "owner-job-approved.png"), full_page=True)
    assert not page.errors, page.errors
    page.context.close()

    deadline = time.monotonic() + DEADLINE
    while True:
        consumer.get_by_role("button", name="Check the job's status").click()
        consumer.wait_for_function("document.body.dataset.jobState", timeout=60_000)
        state = consumer.evaluate("document.body.dataset.jobState")
        if state in ("succeeded", "failed", "denied"):
            break
        assert time.monotonic() < deadline, f"job {job} still {state}"
        consumer.evaluate("delete document.body.dataset.jobState")
        time.sleep(2)
    assert state == "succeeded", consumer.locator("#job-status").inner_text()
    with consumer.expect_download(timeout=60_000) as info:
        consumer.get_by_role("button", name="Fetch the result").click()
    saved = tmp_path / "result.tar"
    info.value.save_as(saved)
    with tarfile.open(fileobj=io.BytesIO(saved.read_bytes())) as tar:
        member = tar.extractfile("rows.json")
        assert member is not None
        assert json.loads(member.read()) == {"rows": 3}
    consumer.screenshot(path=str(artifacts / "compute-result.png"), full_page=True)
    assert not consumer.errors, consumer.errors
    consumer.context.close()


def test_the_network_page_shows_every_node(net: Net) -> None:
    page = httpx.get(f"{net.web}/network", timeout=60).text
    for part in ("chain", "storage1", "storage6", "proxy1", "proxy2", "compute", "catalog"):
        assert f"<td>{part}</td>" in page
    assert page.count('class="ok"') >= 11 and 'class="error"' not in page


def test_umbral_wasm_loads_in_chromium_from_the_node(browser: Any, net: Net) -> None:
    page = browser.new_page()
    page.goto(f"{net.web}/")
    hex_key = page.evaluate(
        """async () => {
          const u = await window.datagora.loadUmbral();
          const seed = new Uint8Array(32).fill(7);
          const sk = u.SecretKeyFactory.fromSecureRandomness(seed)
            .makeKey(new TextEncoder().encode("datagora-consumer-v1"));
          return Array.from(sk.publicKey().toCompressedBytes())
            .map(b => b.toString(16).padStart(2, '0')).join('');
        }"""
    )
    from umbral_pre import SecretKeyFactory

    expected = (
        SecretKeyFactory.from_secure_randomness(bytes([7] * 32))
        .make_key(b"datagora-consumer-v1")
        .public_key()
    )
    assert hex_key == expected.to_compressed_bytes().hex()
    page.close()


def test_a_missing_primary_share_is_named_with_the_cli_command(
    browser: Any, net: Net, artifacts: Path, tmp_path: Path
) -> None:
    """Every storage node loses primary share 0 of dataset 1's first chunk: the page says
    the chunk needs decoding from parity shares and shows the command; the command
    (the CLI, which decodes) gets the file. Last in the module: it damages dataset 1."""
    import sqlite3

    ledger = _ledger(net)
    manifest_hash = ledger.data_nft.get_dataset(1).manifest_hash.hex()
    storage = httpx.get(f"{net.web}/api/config").json()["storage"]
    answers = (httpx.get(f"{node}/shares/{manifest_hash}") for node in storage)
    manifest = json.loads(next(r.content for r in answers if r.status_code == 200))
    lost = manifest["chunks"][0]["shares"][0]
    removed = 0
    for index in (net.dir / "nodes").glob("storage*/**/index.sqlite3"):
        with contextlib.closing(sqlite3.connect(index, timeout=30)) as db, db:
            gone = db.execute("DELETE FROM shares WHERE name = ?", (bytes.fromhex(lost),))
            removed += gone.rowcount
    assert removed >= 1
    assert all(httpx.get(f"{node}/shares/{lost}").status_code == 404 for node in storage)

    page = wallet_page(browser, net.rpc, _account("researcher", net))
    page.goto(f"{net.web}/datasets/1")
    button = page.get_by_role("button", name="Download and decrypt in this page")
    button.wait_for(state="visible", timeout=30_000)
    button.click()
    fallback = page.locator("#download-cli")
    fallback.wait_for(state="visible", timeout=120_000)
    status = page.locator("#download-status").inner_text()
    assert "Share 0 of chunk 0 (a primary share) is on no node that answers" in status, status
    assert "decoded from its parity shares" in status
    command = fallback.locator("code").inner_text()
    assert command == "datagora download 1 -o dataset-1.bin"
    page.screenshot(path=str(artifacts / "download-missing-share.png"), full_page=True)
    page.context.close()

    out = tmp_path / "dataset-1.bin"
    net.cli("download", "1", "-o", str(out), "--account", "researcher")
    assert out.read_bytes() == (net.dir.parent / "cohort.csv").read_bytes()
