"""The supervisor of `datagora up` on real child processes: a part that exits is
started again (same command, same port) after a back-off, a part that keeps dying
is reported once and left down, and a dead chain still stops the network."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from datagora.node import launcher as launcher_module
from datagora.node.errors import NodeExited
from datagora.node.launcher import Launcher, LaunchPlan, Part

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher_module, "RESTART_FIRST", 0.05)
    monkeypatch.setattr(launcher_module, "RESTART_MAX", 0.4)


def part(tmp_path: Path, name: str, command: list[str], role: str = "storage") -> Part:
    return Part(name, role, 40000, command, tmp_path / f"{name}.log")


def run_until(launcher: Launcher, condition: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "gave up waiting"
        launcher.supervise()
        time.sleep(0.02)


def test_a_killed_part_is_restarted_and_the_rest_keep_running(tmp_path: Path, fast: None) -> None:
    said: list[str] = []
    launcher = Launcher(LaunchPlan(tmp_path), said.append)
    victim = launcher._spawn(part(tmp_path, "storage1", SLEEPER))
    other = launcher._spawn(part(tmp_path, "storage2", SLEEPER))
    chain = launcher._spawn(part(tmp_path, "chain", SLEEPER, "chain"))
    try:
        assert victim.process is not None and other.process is not None
        first, bystander = victim.process.pid, other.process.pid
        os.kill(first, signal.SIGKILL)
        run_until(launcher, lambda: victim.restarts == 1 and victim.running)
        assert victim.process.pid != first and victim.command == SLEEPER
        assert victim.port == 40000 and other.process.pid == bystander and other.running
        assert said == [
            "storage1 exited unexpectedly (code -9); restarting it in 0.05 s on port 40000"
        ]
        assert "restarting (restart 1) storage1" in victim.log.read_text()
        state = (tmp_path / "supervisor.json").read_text()
        assert '"restarts": 1' in state and '"state": "running"' in state

        # The chain is not restarted: it stops the network.
        assert chain.process is not None
        os.kill(chain.process.pid, signal.SIGKILL)
        chain.process.wait()
        with pytest.raises(NodeExited, match="the chain exited unexpectedly"):
            launcher.supervise()
    finally:
        launcher.stop()
    assert not any(p.running for p in launcher.parts)


def test_a_part_that_keeps_dying_is_left_down_with_one_line(tmp_path: Path, fast: None) -> None:
    said: list[str] = []
    launcher = Launcher(LaunchPlan(tmp_path), said.append)
    crasher = launcher._spawn(part(tmp_path, "proxy1", CRASHER, "proxy"))
    steady = launcher._spawn(part(tmp_path, "agent", SLEEPER, "agent"))
    try:
        started = time.monotonic()
        run_until(launcher, lambda: crasher.given_up)
        # Back-off doubles: 0.05 + 0.1 + 0.2 + 0.4 (capped) before the fifth death.
        assert time.monotonic() - started >= 0.7
        assert crasher.restarts == launcher_module.GIVE_UP_DEATHS - 1
        down = [line for line in said if "left down" in line]
        assert len(down) == 1 and "\n" not in down[0]
        assert down[0].startswith("proxy1 died 5 times within 60 s: left down")
        for _ in range(20):  # nothing more happens to it
            launcher.supervise()
        assert crasher.restarts == launcher_module.GIVE_UP_DEATHS - 1 and steady.running
        assert '"state": "down"' in (tmp_path / "supervisor.json").read_text()
    finally:
        launcher.stop()
