"""A chain killed under `up` (SIGKILL to anvil) comes back with every acknowledged
change: anvil restarts on the last saved state and the journal of changes since is
replayed before any call is answered (see datagora.node.chainfront). The adversary
is the kernel: anvil dies with its memory, between two saves."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils import to_checksum_address
from sqlalchemy import select

from datagora.catalog import db as t
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.ledger import Chain, Ledger
from datagora.node import chainfront
from datagora.node import launcher as launcher_module
from datagora.node.chainfront import POSITION_KEY, is_change
from datagora.node.errors import NodeExited
from datagora.node.launcher import Launcher, LaunchPlan, Part
from datagora.ports import free_port
from helpers import BUYER, DEPLOYER, OWNER, PRICE, fund, publish

pytestmark = pytest.mark.anvil

HOLDER = "0x" + "5a" * 20


def rpc(url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    reply = httpx.post(url, json=body, timeout=60, trust_env=False).json()
    assert "error" not in reply, reply
    return reply["result"]


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Launcher, Part, list[str]]]:
    said: list[str] = []
    launcher = Launcher(LaunchPlan(tmp_path), said.append)
    try:
        yield launcher, launcher.start_chain(free_port()), said
    finally:
        launcher.stop()


def kill(chain: Part) -> None:
    # The group: node_modules/.bin/anvil is a node script that runs the binary.
    assert chain.process is not None
    os.killpg(chain.process.pid, signal.SIGKILL)
    chain.process.wait()


def picture(ledger: Ledger, url: str) -> dict[str, Any]:
    """What must survive: balances, datasets, every block's number, timestamp and
    transactions (their hashes), the nonces."""
    head = int(rpc(url, "eth_blockNumber"), 16)
    # From block 1: anvil stamps its genesis block anew whenever it loads a state.
    blocks = [rpc(url, "eth_getBlockByNumber", hex(n), False) for n in range(1, head + 1)]
    people = [OWNER.address, BUYER.address, DEPLOYER.address, HOLDER]
    return {
        "head": head,
        "blocks": [(b["number"], b["timestamp"], b["transactions"]) for b in blocks],
        "tokens": [ledger.market_token.balance_of(a) for a in people],
        "eth": [rpc(url, "eth_getBalance", a, "latest") for a in people],
        "nonces": [rpc(url, "eth_getTransactionCount", a, "latest") for a in people],
        "datasets": [
            ledger.data_nft.get_dataset(d) for d in range(1, ledger.data_nft.dataset_count() + 1)
        ],
    }


def test_a_killed_chain_comes_back_with_every_acknowledged_change(
    up: tuple[Launcher, Part, list[str]], tmp_path: Path
) -> None:
    launcher, chain, said = up
    ledger = Ledger.deploy(Chain.rpc(chain.url), DEPLOYER)
    fund(ledger, BUYER.address)
    publish(ledger)
    launcher._save_chain_state(force=True)  # the last save: none during the test
    assert launcher._front is not None
    saved_at = launcher._front.position
    catalog = Indexer(ledger, Database(f"sqlite:///{tmp_path / 'catalog.db'}"))
    catalog.sync()

    # Changes after the save, acknowledged each: datasets, token moves, a balance set
    # without a block, and the clock moved forward (a rule's deadline would pass).
    receipts = [
        publish(ledger, metadata_uri=f"https://example.org/{i}").tx.tx_hash for i in range(3)
    ]
    for _ in range(4):
        receipts.append(ledger.market_token.transfer(BUYER, OWNER.address, PRICE // 10).tx_hash)
    rpc(chain.url, "anvil_setBalance", HOLDER, hex(12345))
    ledger.chain.advance_time(5000)
    receipts.append(ledger.market_token.transfer(BUYER, HOLDER, 7).tx_hash)
    catalog.sync()
    journal = (tmp_path / "chain-journal.jsonl").read_text().splitlines()
    assert sum('"request"' in line for line in journal) == 11  # 8 txs, setBalance, time, mine
    before = picture(ledger, chain.url)

    kill(chain)
    launcher.supervise()

    assert chain.restarts == 1 and chain.running
    assert "replayed 11 journaled changes" in said[-1], said
    assert picture(ledger, chain.url) == before  # same blocks, times, balances, datasets
    for tx in receipts:
        receipt = rpc(chain.url, "eth_getTransactionReceipt", tx)
        assert receipt is not None and receipt["status"] == "0x1"
    # The clock continues where it was (anvil alone would go back 5000 s).
    last = int(before["blocks"][-1][1], 16)
    ledger.market_token.transfer(BUYER, HOLDER, 1)
    now = int(rpc(chain.url, "eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    assert last < now < last + 60
    # The catalog catches up: the same four datasets, none twice.
    catalog.sync()
    with catalog.db.engine.connect() as conn:
        ids = sorted(conn.execute(select(t.datasets.c.id)).scalars())
    assert ids == [1, 2, 3, 4]

    # A second death replays only what came after the next save.
    launcher._save_chain_state()
    assert launcher._front.position == saved_at + 12
    assert (tmp_path / "chain-journal.jsonl").read_text() == ""
    ledger.market_token.transfer(BUYER, HOLDER, 2)
    again = picture(ledger, chain.url)
    kill(chain)
    launcher.supervise()
    assert "replayed 1 journaled changes" in said[-1] and chain.restarts == 2
    assert picture(ledger, chain.url) == again


def test_a_change_whose_answer_was_lost_is_applied_once_and_answered(
    up: tuple[Launcher, Part, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """anvil stalls with a transaction in hand (SIGSTOP): its outcome is unknown, so
    the front kills it and the replay decides; the sender gets the replay's answer."""
    launcher, chain, _ = up
    monkeypatch.setattr(chainfront, "CHANGE_TIMEOUT", 2.0)
    nonce = int(rpc(chain.url, "eth_getTransactionCount", OWNER.address, "latest"), 16)
    fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    tx = {
        "to": to_checksum_address(HOLDER),
        "value": 5,
        "gas": 21000,
        "nonce": nonce,
        "chainId": 31337,
        **fees,
    }
    raw = "0x" + bytes(OWNER.sign_transaction(tx).raw_transaction).hex()
    assert chain.process is not None
    os.killpg(chain.process.pid, signal.SIGSTOP)
    answers: list[Any] = []

    def send() -> None:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]}
        answers.append(httpx.post(chain.url, json=body, timeout=90, trust_env=False).json())

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while sender.is_alive():
        assert time.monotonic() < deadline
        launcher.supervise()  # as `up` does every 0.5 s
        time.sleep(0.05)
    assert "result" in answers[0], answers
    assert chain.restarts == 1
    receipt = rpc(chain.url, "eth_getTransactionReceipt", answers[0]["result"])
    assert receipt["status"] == "0x1"
    assert int(rpc(chain.url, "eth_getBalance", HOLDER, "latest"), 16) == 5  # once
    assert int(rpc(chain.url, "eth_getTransactionCount", OWNER.address, "latest"), 16) == nonce + 1


def test_up_itself_killed_replays_the_journal_at_the_next_start(tmp_path: Path) -> None:
    """`up` dies (SIGKILL, no save at stop): the next `up` loads the last save and
    replays the journal."""
    first = Launcher(LaunchPlan(tmp_path))
    chain = first.start_chain(free_port())
    first._save_chain_state(force=True)
    rpc(chain.url, "anvil_setBalance", HOLDER, hex(777))
    rpc(chain.url, "evm_mine")
    kill(chain)
    assert first._front is not None
    first._front.close()  # what the death of `up` leaves: a journal, an older state
    said: list[str] = []
    second = Launcher(LaunchPlan(tmp_path), said.append)
    try:
        chain = second.start_chain(free_port())
        assert int(rpc(chain.url, "eth_getBalance", HOLDER, "latest"), 16) == 777
        assert int(rpc(chain.url, "eth_blockNumber"), 16) == 1
        assert said == ["replayed 2 journaled chain changes made after the saved state"]
    finally:
        second.stop()
    import json

    saved = json.loads((tmp_path / "chain-state.json").read_text())
    assert saved[POSITION_KEY] == 2


def test_which_calls_are_journaled() -> None:
    change = {"method": "eth_sendRawTransaction", "params": ["0x00"]}
    assert is_change(change) and is_change([{"method": "eth_call"}, change])
    assert is_change({"method": "evm_increaseTime"}) and is_change({"method": "anvil_mine"})
    for read in ("eth_call", "eth_getLogs", "anvil_nodeInfo", "anvil_dumpState", "evm_snapshot"):
        assert not is_change({"method": read})
    assert not is_change(None) and not is_change([]) and not is_change({"method": 3})


def test_a_chain_that_keeps_dying_stops_everything(
    up: tuple[Launcher, Part, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher, chain, _ = up
    monkeypatch.setattr(launcher_module, "GIVE_UP_DEATHS", 2)
    kill(chain)
    launcher.supervise()
    assert chain.restarts == 1 and chain.running
    kill(chain)
    with pytest.raises(NodeExited, match="the chain died 2 times within 60 s"):
        launcher.supervise()


def test_a_transaction_held_in_the_pool_keeps_the_journal_until_it_is_mined(
    up: tuple[Launcher, Part, list[str]], tmp_path: Path
) -> None:
    """A nonce gap: anvil holds the later transaction unmined, and a save (which does
    not hold the pool) would drop it with the journal; so the save waits."""
    launcher, chain, _ = up
    launcher._save_chain_state(force=True)
    nonce = int(rpc(chain.url, "eth_getTransactionCount", OWNER.address, "latest"), 16)

    def raw(n: int) -> str:
        fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": 31337}
        tx = {"to": to_checksum_address(HOLDER), "value": 5, "gas": 21000, "nonce": n, **fees}
        return "0x" + bytes(OWNER.sign_transaction(tx).raw_transaction).hex()

    held = rpc(chain.url, "eth_sendRawTransaction", raw(nonce + 1))
    launcher._next_save_at = 0.0
    launcher._save_chain_state()
    assert (tmp_path / "chain-journal.jsonl").read_text() != ""  # not saved: kept
    kill(chain)
    launcher.supervise()  # the held transaction is replayed into the pool again
    rpc(chain.url, "eth_sendRawTransaction", raw(nonce))  # the gap is filled: both mine
    assert rpc(chain.url, "eth_getTransactionReceipt", held)["status"] == "0x1"
    launcher._save_chain_state()
    assert (tmp_path / "chain-journal.jsonl").read_text() == ""


def test_the_front_refuses_bad_lengths_before_reading(tmp_path: Path) -> None:
    front = chainfront.ChainFront(tmp_path, free_port())
    front.listen()
    try:
        for length, status in (("x", 400), (str(chainfront.MAX_BODY + 1), 413)):
            with socket.create_connection(("127.0.0.1", front.port), timeout=10) as conn:
                conn.sendall(
                    f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
                )
                assert conn.recv(100).startswith(f"HTTP/1.1 {status}".encode())
        assert (tmp_path / "chain-journal.jsonl").read_text() == ""  # nothing journaled
    finally:
        front.close()


def test_the_front_answers_a_browsers_preflight_as_anvil_does(tmp_path: Path) -> None:
    """A wallet page (another origin) calls the chain: its CORS preflight gets the
    answer anvil gives, or the browser never sends the call (the web page's wallet
    broke when `up` put the front before anvil)."""
    import httpx

    front = chainfront.ChainFront(tmp_path, free_port())
    front.listen()
    try:
        pre = httpx.options(
            f"http://127.0.0.1:{front.port}/",
            headers={
                "Origin": "http://127.0.0.1:1",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
            timeout=10,
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "*"
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert pre.headers["access-control-allow-headers"] == "content-type"
        assert (tmp_path / "chain-journal.jsonl").read_text() == ""  # nothing journaled
    finally:
        front.close()
