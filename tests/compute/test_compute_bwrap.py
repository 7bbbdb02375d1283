"""The bubblewrap sandbox against a dishonest consumer's jobs, with the sandbox run by root and
by an unprivileged user (``nobody``, through ``setpriv``, with its own directories): the
node's key, ``datagora up``'s state directory, the node's code and venv, mounts, ptrace and
namespaces, the network, fork and inode bombs and huge outputs are all contained, and a
normal job still runs afterwards."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_escapes import GOOD, SECCOMP_CHECKED, SECCOMP_PROBE, SECRET, escapes

import datagora
from datagora.compute import sandbox as sandbox_module
from datagora.compute.errors import SandboxUnavailable
from datagora.compute.sandbox import Isolation, Limits, Sandbox, bubblewrap_problem

NOBODY = 65534
LIMITS = {
    "cpu_s": 5,
    "wall_s": 30,
    "memory_bytes": 1 << 30,
    "file_bytes": 8 << 20,
    "processes": 32,
    "disk_bytes": 16 << 20,
    "files": 500,
}


@pytest.fixture(scope="module")
def bubblewrap() -> None:
    problem = bubblewrap_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the bubblewrap sandbox: {problem}")
        pytest.skip(f"{problem} ('make setup' as root installs it)")


class Loopback:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.accepted = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.close()


def _secret_file(path: Path, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{SECRET}\n")
    os.chmod(path, mode)
    return path


def check(report: dict[str, Any], cases: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    for name, (_, words) in cases.items():
        run = report[name]
        logs = run["stdout"] + run["stderr"]
        assert not run["ok"], (name, logs)
        assert any(w in run["reason"] for w in words), (name, run["reason"], logs)
        assert "ESCAPED" not in logs and SECRET not in logs, (name, logs)
    probe = report["seccomp"]
    assert probe["ok"], probe
    errnos = json.loads(probe["stdout"])
    assert {name: errnos[name] for name in SECCOMP_CHECKED} == dict.fromkeys(SECCOMP_CHECKED, 1)
    good = report["good"]
    assert good["ok"], good
    assert good["output_text"] == ["rows=4"]


def _run_all(sandbox: Sandbox, inputs: dict[int, Path], cases: dict[str, str]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, code in cases.items():
        with sandbox.run(code.encode(), inputs, {}) as run:
            names = sorted(p.name for p in run.output_dir.iterdir())
            report[name] = {
                "ok": run.ok,
                "reason": run.reason,
                "stdout": run.stdout.decode(errors="replace"),
                "stderr": run.stderr.decode(errors="replace"),
                "output_text": [(run.output_dir / n).read_text() for n in names[:1]],
            }
    return report


def test_escapes_are_contained_when_the_node_is_root(
    bubblewrap: None, tmp_path: Path, loopback: Loopback
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the node runs as root in this test")
    data = tmp_path / "owner" / "table.csv"
    data.parent.mkdir()
    data.write_text("a,b\n1,2\n3,4\n5,6\n")
    key = _secret_file(tmp_path / "node" / "keys" / "owner.key", 0o600)
    # `datagora up`'s state directory, outside the checkout, world-readable: only the
    # sandbox keeps it from the job.
    state = Path(tempfile.mkdtemp(prefix="up-state-"))
    try:
        os.chmod(state, 0o755)
        token = _secret_file(state / ".datagora" / "owner-token", 0o644)
        os.chmod(token.parent, 0o755)
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        sandbox = Sandbox(
            Limits(**LIMITS), scratch_dir=scratch, hide=[tmp_path / "node", data.parent]
        )
        assert sandbox.isolation is Isolation.BUBBLEWRAP
        assert sandbox.describe()["sandbox"] == "bubblewrap"
        read_only = [Path(dest) for _, dest in sandbox.binds]
        read_only.append(Path(datagora.__file__).parent)
        cases = escapes(loopback.port, [key, token, data], read_only)
        codes = {name: code for name, (code, _) in cases.items()}
        report = _run_all(sandbox, {1: data}, {**codes, "seccomp": SECCOMP_PROBE, "good": GOOD})
        check(report, cases)
        assert loopback.accepted == 0
        for folder in read_only:
            assert not (folder / "datagora_planted.py").exists()
        assert list(scratch.iterdir()) == []
    finally:
        shutil.rmtree(state)


def _expose_to_nobody(paths: list[str], stage: Path) -> str:
    """Shell lines (run as root in a private mount namespace) making `paths` reachable by
    nobody where a parent is not (pyenv's Python under /root, mode 0700): the blocked
    parent is covered by an empty tmpfs into which only `paths` are moved back."""
    lines = ["set -e"]
    blocked: dict[str, list[str]] = {}
    for path in paths:
        for parent in reversed(Path(path).parents):
            if str(parent) != "/" and not os.stat(parent).st_mode & 0o001:
                blocked.setdefault(str(parent), []).append(path)
                break
    k = 0
    for parent, kept in blocked.items():
        moves = []
        for path in kept:
            k += 1
            lines.append(f"mkdir -p {stage}/{k} && mount --rbind {shlex.quote(path)} {stage}/{k}")
            moves.append(
                f"mkdir -p {shlex.quote(path)} && mount --move {stage}/{k} {shlex.quote(path)}"
            )
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(parent)}")
        lines += moves
    lines.append(f'exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- "$@"')
    return "\n".join(lines)


def test_escapes_are_contained_when_the_node_is_nobody(
    bubblewrap: None, loopback: Loopback
) -> None:
    if os.geteuid() != 0:
        pytest.skip("root starts the unprivileged process in this test")
    base = Path(tempfile.mkdtemp(prefix="nobody-node-"))
    try:
        # The node's own venv (its packages through a .pth) and code, owned by the node's
        # user: only the sandbox's read-only binds keep the job from rewriting them.
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        shown = subprocess.run(
            [sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
            capture_output=True,
            text=True,
            check=True,
        )
        deps = [p for p in json.loads(shown.stdout) if os.path.isdir(p)]
        deps = [p for p in deps if not p.startswith(sys.base_prefix)]
        site = next(venv.glob("lib/python3*/site-packages"))
        (site / "node-deps.pth").write_text("\n".join(deps) + "\n")
        shutil.copytree(Path(datagora.__file__).parent, base / "code" / "datagora")
        shutil.copy(Path(__file__).with_name("sandbox_driver.py"), base / "driver.py")
        # Its key inside a directory the sandbox binds (the venv): `hide` covers it there.
        key = _secret_file(venv / "keys" / "owner.key", 0o600)
        token = _secret_file(base / "elsewhere" / ".datagora" / "owner-token", 0o600)
        data = base / "data" / "table.csv"
        data.parent.mkdir()
        data.write_text("a,b\n1,2\n3,4\n5,6\n")
        (base / "scratch").mkdir()
        read_only = [site, venv, key.parent, base / "code" / "datagora", Path(deps[-1])]
        cases = escapes(loopback.port, [key, token, data], read_only)
        spec = {
            "scratch": str(base / "scratch"),
            "hide": [str(key.parent), str(base / "elsewhere"), str(base / "data")],
            "limits": LIMITS,
            "inputs": {"1": str(data)},
            "cases": {
                **{name: code for name, (code, _) in cases.items()},
                "seccomp": SECCOMP_PROBE,
                "good": GOOD,
            },
        }
        (base / "spec.json").write_text(json.dumps(spec))
        for dirpath, _, filenames in os.walk(base):
            os.chown(dirpath, NOBODY, NOBODY)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), NOBODY, NOBODY)
        os.chmod(base, 0o700)
        stage = Path(tempfile.mkdtemp(prefix="expose-"))
        script = _expose_to_nobody([sys.base_prefix, *deps], stage)
        command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
        command += ["sh", str(venv / "bin" / "python"), str(base / "driver.py")]
        command.append(str(base / "spec.json"))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "PYTHONPATH": str(base / "code")}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        shutil.rmtree(stage)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert report["describe"]["sandbox"] == "bubblewrap"
        assert report["describe"]["cgroups"].startswith("skipped: the node is not root")
        check(report, cases)
        assert loopback.accepted == 0
        for folder in read_only:
            assert not (folder / "datagora_planted.py").exists()
        assert list((base / "scratch").iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_the_node_refuses_jobs_without_bubblewrap_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A machine without bwrap, as the probe reports it.
    missing = "bubblewrap (bwrap) is not installed: 'make setup' as root installs it"
    monkeypatch.setitem(sandbox_module._probe_cache, os.geteuid(), missing)
    with pytest.raises(SandboxUnavailable, match="--allow-weak-sandbox"):
        Sandbox()
    # The default scratch directory (/tmp): the weak mode's uid must reach the job's.
    weak = Sandbox(Limits(**LIMITS), allow_weak=True)
    assert weak.isolation is Isolation.WEAK
    assert weak.describe()["sandbox"] == "weak"
    # The weak mode still runs jobs (as the sandbox uid when root), and says so.
    data = tmp_path / "table.csv"
    data.write_text("a,b\n1,2\n3,4\n5,6\n")
    with weak.run(GOOD.encode(), {1: data}, {}) as run:
        assert run.ok, (run.reason, run.stderr)
        assert run.isolation is Isolation.WEAK
        assert (run.output_dir / "summary.txt").read_text() == "rows=4"
