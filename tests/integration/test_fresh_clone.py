"""A new user's first minutes: `git clone`, then `make demo`, with nothing installed by hand.

The clone is of the committed HEAD (what CI and a user get); `make demo` creates the
clone's own ``.venv`` and ``node_modules`` from ``pyproject.toml`` and
``package.json``, then runs the whole story. pip's and npm's download caches are
shared with the machine (that is what a user's second project gets too); nothing
of this checkout's environment is reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_from_a_fresh_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing to clone")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("the checkout has no commit yet")
    clone = tmp_path / "datagora"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "DATAGORA_NETWORK", "DATAGORA_HOME"}
    }
    # The user's PATH without this checkout's venv, so the clone must make its own.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    run = subprocess.run(
        ["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=1200
    )
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    assert (clone / ".venv" / "bin" / "datagora").exists(), tail
    assert (clone / "node_modules").is_dir(), tail
    # The story ran to its end: the last line says every node stopped.
    assert "every node stopped" in run.stdout, tail
