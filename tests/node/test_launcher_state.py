"""`datagora up` never starts anvil on a half-written chain state."""

from __future__ import annotations

import json
from pathlib import Path

from datagora.node.launcher import Launcher, LaunchPlan


def launcher(tmp_path: Path) -> tuple[Launcher, list[str]]:
    said: list[str] = []
    return Launcher(LaunchPlan(state_dir=tmp_path), said.append), said


def test_a_complete_state_is_kept_aside(tmp_path: Path) -> None:
    up, _ = launcher(tmp_path)
    (tmp_path / "chain-state.json").write_text(json.dumps({"block": 7}))
    up._check_chain_state()
    assert json.loads((tmp_path / "chain-state.good.json").read_text()) == {"block": 7}
    (tmp_path / "chain-state.json").write_text('{"block": 8, "acc')  # a write in progress
    up._keep_chain_state()
    assert json.loads((tmp_path / "chain-state.good.json").read_text()) == {"block": 7}


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
