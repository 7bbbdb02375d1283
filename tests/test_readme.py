"""The README runs as written, from where it says to run it: the repository root.

The tour's commands and then the Python blocks run there, against a network `datagora
up` started (its state in a temporary directory), and the repository root gains no
file: the tour writes into ``out/``, which git ignores.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCRATCH = ROOT / "out"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datagora", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def tour() -> list[list[str]]:
    """The shell lines a reader types in the second terminal, comments dropped (`make`
    and `datagora up` are the set-up, run by the test itself)."""
    lines = [
        shlex.split(line, comments=True) for block in blocks("sh") for line in block.splitlines()
    ]
    return [argv for argv in lines if argv and argv[0] in ("datagora", "mkdir")]


def until(check: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` until its output shows `check`, as the README's reader would repeat it."""
    deadline = time.monotonic() + 240
    while True:
        done = cli(*argv, env=env)
        if check in done.stdout or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def test_the_tour_uses_the_scratch_directory() -> None:
    commands = tour()
    assert commands[0] == ["mkdir", "-p", "out"], "the tour makes its scratch directory first"
    writes = [a[a.index(flag) + 1] for a in commands for flag in ("-o", "--prov") if flag in a]
    assert writes and all(w.startswith("out/") for w in writes), writes
    assert "out/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_embedded_block_names_the_file_from_the_root() -> None:
    paths = re.findall(r"publish\(\"([^\"]+)\"", "".join(blocks("python")))
    assert paths and all((ROOT / p).is_file() for p in paths), paths


@pytest.mark.slow
def test_readme_runs_from_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = blocks("python")
    assert python, "the README has Python examples"
    state = tmp_path / ".datagora"
    env = {**os.environ, "DATAGORA_NETWORK": str(state / "network.json")}
    had_scratch = SCRATCH.exists()
    before = set(os.listdir(ROOT))
    up = subprocess.Popen(
        [sys.executable, "-m", "datagora", "up", "--dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 240
        while cli("status", env=env).returncode != 0:
            assert up.poll() is None, up.stderr.read().decode() if up.stderr else "up died"
            assert time.monotonic() < deadline, "the network did not come up"
            time.sleep(1)
        for argv in tour():
            if argv[0] == "mkdir":
                done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            elif argv[1] == "search":
                done = until("Breast", argv[1:], env)
            elif argv[1:3] == ["compute", "status"]:
                done = until("succeeded", argv[1:], env)
            else:
                done = cli(*argv[1:], env=env)
            assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
        for written in ("copy.csv", "history.json", "model.json", "results"):
            assert (SCRATCH / written).exists(), written
        monkeypatch.setenv("DATAGORA_NETWORK", str(state / "network.json"))
        monkeypatch.chdir(ROOT)
        scopes: list[dict[str, object]] = []
        for block in python:
            scopes.append({})
            exec(compile(block, str(README), "exec"), scopes[-1])
        frame = scopes[0]["df"]
        expected = (ROOT / "examples" / "cohort.csv").read_text().splitlines()
        assert list(frame.columns) == expected[0].split(",")  # type: ignore[attr-defined]
        assert len(frame) == len(expected) - 1  # type: ignore[arg-type]
        if len(scopes) > 1:  # the embedded network's block read the same file back
            assert scopes[1]["frame"].equals(frame)  # type: ignore[attr-defined]
        # The same network through the CLI: private records round-trip.
        put = cli("kv", "put", "notes/1", "--value", "hello records", "--account", "owner", env=env)
        assert put.returncode == 0, put.stderr
        got = cli("kv", "get", "notes/1", "--account", "owner", env=env)
        assert got.returncode == 0 and got.stdout == "hello records", got.stderr
        assert set(os.listdir(ROOT)) - before <= {"out"}, "the README wrote into the root"
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        if not had_scratch:
            shutil.rmtree(SCRATCH, ignore_errors=True)
