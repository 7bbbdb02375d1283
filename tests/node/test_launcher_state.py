"""`datagora up` saves the chain's state whole and never starts anvil on a half-written one."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from datagora.ledger.anvil import Anvil
from datagora.node.launcher import SAVE_INTERVAL, Launcher, LaunchPlan, save_delay
from datagora.ports import free_port

HOLDER = "0x" + "5a" * 20


def launcher(tmp_path: Path) -> tuple[Launcher, list[str]]:
    said: list[str] = []
    return Launcher(LaunchPlan(state_dir=tmp_path), said.append), said


def test_a_half_written_state_is_replaced_by_the_last_complete_copy(tmp_path: Path) -> None:
    up, said = launcher(tmp_path)
    (tmp_path / "chain-state.good.json").write_text(json.dumps({"block": 7}))
    (tmp_path / "chain-state.json").write_text('{"block": 9, "acc')
    up._check_chain_state()
    assert json.loads((tmp_path / "chain-state.json").read_text()) == {"block": 7}
    broken = list(tmp_path.glob("chain-state.broken-*.json"))
    assert len(broken) == 1 and broken[0].read_text() == '{"block": 9, "acc'  # kept, not lost
    assert "restored the last complete copy" in said[0]


def test_a_half_written_state_without_a_copy_starts_a_new_chain(tmp_path: Path) -> None:
    up, said = launcher(tmp_path)
    (tmp_path / "chain-state.json").write_text('{"blo')
    up._check_chain_state()
    assert not (tmp_path / "chain-state.json").exists()
    assert "new chain" in said[0]


def rpc(url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    return httpx.post(url, json=body, timeout=30, trust_env=False).json()["result"]


def test_the_chain_state_is_saved_whole_when_it_changed_and_loads_back(tmp_path: Path) -> None:
    up, said = launcher(tmp_path)
    state = tmp_path / "chain-state.json"
    # A copy an earlier version kept: older than any save, so it must go.
    (tmp_path / "chain-state.good.json").write_text(json.dumps({"block": 1}))
    assert "--load-state" not in up._chain_part(free_port(), free_port()).command
    try:
        chain = up.start_chain(free_port())
        rpc(chain.url, "anvil_setBalance", HOLDER, hex(12345))  # no block, but journaled
        before = time.monotonic()
        assert up._next_save_at <= before  # the first save is due at once
        up._save_chain_state()
        assert up._next_save_at >= before + SAVE_INTERVAL
        saved = state.stat()
        assert saved.st_mode & 0o777 == 0o600
        assert json.loads(state.read_bytes())["best_block_number"] in (0, "0x0")
        up._save_chain_state()  # nothing since: not written again
        assert state.stat().st_ino == saved.st_ino
        rpc(chain.url, "evm_mine")
        up._save_chain_state()
        assert state.stat().st_ino != saved.st_ino
    finally:
        up.stop()
    assert not (tmp_path / "chain-state.good.json").exists()
    assert said == []
    command = up._chain_part(free_port(), free_port()).command
    assert command[command.index("--load-state") + 1] == str(state)
    # A node started on the file has the block and the balance; stopping it saves
    # what it added.
    with Anvil(state=state) as again:
        assert int(rpc(again.url, "eth_blockNumber"), 16) == 1
        assert int(rpc(again.url, "eth_getBalance", HOLDER, "latest"), 16) == 12345
        rpc(again.url, "evm_mine")
    with Anvil(state=state) as third:
        assert int(rpc(third.url, "eth_blockNumber"), 16) == 2


def test_a_costly_save_is_spaced_out() -> None:
    assert save_delay(0.0) == save_delay(0.01) == SAVE_INTERVAL
    assert save_delay(1.7) == 34.0  # a 42 MB state (20,000 transactions) took 1.7 s
    assert save_delay(2.0) > save_delay(1.0) > SAVE_INTERVAL


def test_a_chain_that_cannot_be_read_is_reported_and_nothing_written(tmp_path: Path) -> None:
    up, said = launcher(tmp_path)
    try:
        chain = up.start_chain(free_port())
        assert chain.process is not None
        os.killpg(chain.process.pid, signal.SIGKILL)  # not noticed by a supervisor yet
        chain.process.wait()
        up._save_chain_state(force=True)
    finally:
        up.stop()
    assert not (tmp_path / "chain-state.json").exists()
    assert len(said) == 1 and said[0].startswith("could not save the chain's state"), said
