"""The README's Python examples run as written, against a network `datagora up` started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datagora", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has Python examples"
    state = tmp_path / ".datagora"
    env = {**os.environ, "DATAGORA_NETWORK": str(state / "network.json")}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datagora",
            "up",
            "--dir",
            str(state),
            "--storage",
            "6",
            "--proxies",
            "3",
            "--threshold",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        while cli("status", env=env).returncode != 0:
            assert up.poll() is None, up.stderr.read().decode() if up.stderr else "up died"
            assert time.monotonic() < deadline, "the network did not come up"
            time.sleep(1)
        data = tmp_path / "cohort.csv"
        data.write_text("radius,label\n" + "".join(f"{i}.5,{i % 2}\n" for i in range(2000)))
        published = cli(
            "publish",
            str(data),
            "--title",
            "Breast cancer cohort",
            "--tag",
            "medical",
            "--price",
            "1",
            "--account",
            "owner",
            env=env,
        )
        assert published.returncode == 0, published.stderr
        deadline = time.monotonic() + 60
        while "Breast" not in cli("search", "breast", env=env).stdout:
            assert time.monotonic() < deadline, "never indexed"
            time.sleep(0.5)
        monkeypatch.setenv("DATAGORA_NETWORK", str(state / "network.json"))
        monkeypatch.chdir(tmp_path)  # the blocks' "cohort.csv" is the file published above
        scopes: list[dict[str, object]] = []
        for block in blocks:
            scopes.append({})
            exec(compile(block, str(README), "exec"), scopes[-1])
        # The same network through the CLI: private records round-trip.
        put = cli("kv", "put", "notes/1", "--value", "hello records", "--account", "owner", env=env)
        assert put.returncode == 0, put.stderr
        got = cli("kv", "get", "notes/1", "--account", "owner", env=env)
        assert got.returncode == 0 and got.stdout == "hello records", got.stderr
        frame = scopes[0]["df"]
        assert list(frame.columns) == ["radius", "label"] and len(frame) == 2000  # type: ignore[attr-defined]
        if len(scopes) > 1:  # the embedded network's block read the same file back
            embedded = scopes[1]["frame"]
            assert embedded.equals(frame)  # type: ignore[attr-defined]
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
