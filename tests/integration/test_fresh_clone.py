"""A new user's first minutes: `git clone`, then `make demo`, with nothing installed by hand.

The clone is of the committed HEAD (what CI and a user get); `make demo` creates the
clone's own ``.venv`` and ``node_modules`` from ``pyproject.toml`` and
``package.json``, then runs the whole story — here with ``--json``, so the test
reads every figure the demo reports and checks that every check came out true.
pip's and npm's download caches are shared with the machine (that is what a
user's second project gets too); nothing of this checkout's environment is reused.
Outside a git checkout there is nothing to clone: the demo then runs in place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _committed() -> bool:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return False
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True)
    return head.returncode == 0


def _demo_json(stdout: str) -> dict[str, Any]:
    """The demo's JSON object: the last lines of stdout, after the set-up's output."""
    start = stdout.rfind("\n{\n")
    data: dict[str, Any] = json.loads(stdout[start + 1 :] if start >= 0 else stdout)
    return data


def _check(data: dict[str, Any]) -> None:
    flags = {k: v for k, v in data.items() if isinstance(v, bool)}
    assert set(flags) >= {
        "download_sha256_match",
        "revoked_download_refused",
        "survived_node_loss",
        "repaired",
        "audit_verified",
    }
    assert all(flags.values()), flags
    assert data["published"] == 4
    assert 0 < data["publish_gas"] <= 600_000
    assert data["search_hits"] == 3 and data["mock_verified"]
    assert data["compute_jobs"] == 12  # (1 statistics + 3 FedAvg rounds) × 3 hospitals
    assert 0.85 <= data["federated_accuracy"] <= 1.0
    assert abs(data["federated_accuracy"] - data["central_accuracy"]) <= 0.02
    assert data["repaired_shares"] > 0
    assert data["events"] > 50
    assert data["seconds"] > 0
    # What the demo says it wrote is there after it ends, in the directory it names.
    prov = Path(data["prov_file"])
    assert prov.is_file() and prov.stat().st_size == data["prov_bytes"]
    assert prov.parent.name == "datagora-demo-out"


def test_make_demo_from_a_fresh_clone(tmp_path: Path) -> None:
    if not _committed():
        run = subprocess.run(
            [sys.executable, "-m", "datagora", "demo", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its outputs land in the working directory, not the checkout
        )
        assert run.returncode == 0, run.stderr[-3000:]
        _check(json.loads(run.stdout))  # one JSON object and nothing else on stdout
        return
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
        ["make", "--no-print-directory", "demo", "DEMO_ARGS=--json"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    assert (clone / ".venv" / "bin" / "datagora").exists(), tail
    assert (clone / "node_modules").is_dir(), tail
    _check(_demo_json(run.stdout))
