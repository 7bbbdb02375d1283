"""Run an untrusted algorithm next to the data: own process, no network, limits, private files.

An algorithm is a Python file defining ``run(inputs, params, output_dir)`` (see
``docs/compute.md``). :meth:`Sandbox.run` copies the inputs, the algorithm and its
parameters into a fresh private directory (mode 0700), starts the fixed runner
(:mod:`datagora.compute._runner`) in new network, PID and mount namespaces
(``unshare``), enforces a wall-clock limit and a disk-use limit from the parent,
and removes the private directory afterwards whatever happened.

Guarantees, where namespaces are available (:attr:`Isolation.NAMESPACES`):

- no network: the job has only a loopback interface that is down;
- the job and everything it starts live in their own PID namespace; killing the
  namespace's first process (which the parent does on timeout, and the kernel
  does when it exits) ends every process of the job, however it forked;
- ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/home``, ``/run``, ``/mnt``, ``/media``,
  ``/srv`` and the node's own directories are covered by empty read-only tmpfs
  mounts; the job's directory is at ``/tmp/job``;
- resource limits (``setrlimit``): CPU seconds, address space, file size,
  processes, open files; no core dumps;
- a clean environment (minimal ``PATH``, ``HOME`` and ``TMPDIR`` in the job's
  directory, nothing inherited), ``PR_SET_NO_NEW_PRIVS``, and, when the node runs
  as root, a dedicated unprivileged uid/gid.

What it cannot prevent is written down in ``docs/compute.md`` ("Limits of the
sandbox"): files that are world-readable and not hidden (``/etc``, ``/usr``, the
Python installation, the datagora source) can be read; a kernel exploit escapes
any namespace sandbox; CPU time and memory are per process, not per job (no
cgroups); covert channels through timing are not closed.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from datagora.compute import _runner
from datagora.compute.errors import SandboxUnavailable

__all__ = [
    "DEFAULT_HIDDEN",
    "EXIT_REASONS",
    "Isolation",
    "Limits",
    "Sandbox",
    "SandboxResult",
    "probe_isolation",
]

_RUNNER: Final = Path(_runner.__file__).resolve()
_MiB: Final = 1 << 20

DEFAULT_HIDDEN: Final = (
    "/tmp",
    "/root",
    "/var/tmp",
    "/dev/shm",
    "/home",
    "/run",
    "/mnt",
    "/media",
    "/srv",
)
"""Directories covered by empty tmpfs mounts inside the sandbox."""

EXIT_REASONS: Final[dict[int, str]] = {
    _runner.EXIT_RAISED: "the algorithm raised an exception (see the logs)",
    _runner.EXIT_SETUP: "the sandbox could not be set up for this job",
    _runner.EXIT_MEMORY: "memory limit reached (MemoryError)",
    _runner.EXIT_NETWORK: "the algorithm tried to use the network, which the sandbox does not have",
    _runner.EXIT_FILE_ACCESS: "the algorithm tried to open a file outside its inputs "
    "(not visible or not permitted in the sandbox)",
    _runner.EXIT_PROCESSES: "process limit reached (the algorithm forked too many processes)",
    _runner.EXIT_CPU: "CPU time limit reached",
    _runner.EXIT_FILE_SIZE: "file size limit reached (a file grew past the cap)",
    _runner.EXIT_EPSILON: "the algorithm tried to spend more privacy budget (epsilon) "
    "than its parameters declare",
    _runner.EXIT_NO_ENTRY: "the algorithm defines no run(inputs, params, output_dir)",
}


class Isolation(enum.Enum):
    """How strongly jobs are isolated on this machine."""

    NAMESPACES = "namespaces"
    """New network, PID and mount namespaces (``unshare``): the normal mode."""
    WEAK = "weak"
    """Only resource limits, a clean environment and a process group. No network
    isolation at all: used only when the operator explicitly allows it."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one job."""

    cpu_s: int = 120
    memory_bytes: int = 2048 * _MiB
    file_bytes: int = 256 * _MiB
    processes: int = 64
    open_files: int = 256
    wall_s: float = 600.0
    disk_bytes: int = 1024 * _MiB
    """Everything the job writes into its private directory, checked by the parent."""

    def runner_json(self) -> dict[str, int]:
        return {
            "cpu_s": self.cpu_s,
            "memory_bytes": self.memory_bytes,
            "file_bytes": self.file_bytes,
            "processes": self.processes,
            "open_files": self.open_files,
        }


@dataclass(slots=True)
class SandboxResult:
    """What a sandboxed run left: its status, reason, logs and (while open) its output."""

    ok: bool
    reason: str
    """A fixed text chosen by the node (never written by the algorithm); empty when ok."""
    exit_code: int | None
    output_dir: Path
    stdout: bytes
    stderr: bytes
    logs_truncated: bool
    wall_s: float
    isolation: Isolation
    input_paths: dict[int, Path] = field(default_factory=dict)


_probe_cache: dict[tuple[int, bool], bool] = {}
_uid_counter = itertools.count()


def _next_uid() -> int:
    return 61000 + (os.getpid() % 250) * 16 + next(_uid_counter) % 16


def _unshare_prefix(as_root: bool) -> list[str]:
    prefix = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc"]
    if not as_root:
        prefix.append("--map-root-user")
    return [*prefix, "--"]


def probe_isolation() -> Isolation | None:
    """:attr:`Isolation.NAMESPACES` if network, PID and mount namespaces can be made here."""
    as_root = os.geteuid() == 0
    key = (os.geteuid(), as_root)
    if key not in _probe_cache:
        try:
            done = subprocess.run(
                [*_unshare_prefix(as_root), "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
            _probe_cache[key] = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _probe_cache[key] = False
    return Isolation.NAMESPACES if _probe_cache[key] else None


def _needed() -> list[str]:
    """Directories the job needs to see: Python, its packages and datagora itself."""
    import site
    import sysconfig

    here = Path(__file__).resolve().parents[2]  # .../src (or site-packages)
    paths = [
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        str(here),
        *site.getsitepackages(),
        *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
    ]
    return sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})


def _tree_bytes(root: Path) -> int:
    total = 0
    stack = [str(root)]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += max(st.st_size, st.st_blocks * 512)
        except OSError:
            continue
    return total


def _kill_uid(uid: int) -> None:
    """SIGKILL every process whose real uid is `uid` (the dedicated sandbox uid)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            os.kill(int(entry), signal.SIGKILL)
                        break
        except (OSError, ValueError):
            continue


def _remove_tree(path: Path) -> None:
    def onerror(func: Any, target: str, exc: Any) -> None:
        # A job may leave directories without write permission (non-root node).
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            if os.path.isdir(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)

    for _ in range(3):
        if not path.exists():
            return
        shutil.rmtree(path, onerror=onerror)
        if path.exists():
            time.sleep(0.05)


def _read_capped(path: Path, cap: int) -> tuple[bytes, bool]:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    return data[:cap], len(data) > cap


class Sandbox:
    """Runs algorithms under one isolation mode and one set of limits.

    Raises :class:`SandboxUnavailable` when namespaces cannot be made and
    ``allow_weak`` is false: a node never silently runs jobs with network access.
    ``hide`` adds directories (the node's data directory, the datasets' folders) to
    :data:`DEFAULT_HIDDEN`. ``sandbox_uid`` is the unprivileged uid/gid jobs run
    as when the node is root; each sandbox needs its own (the process limit counts
    per uid, and leftover processes are killed by uid), so the default picks one in
    61000–64999 from the process id and a counter: give nodes explicit uids in
    production.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        allow_weak: bool = False,
        scratch_dir: Path | None = None,
        hide: Sequence[Path | str] = (),
        sandbox_uid: int | None = None,
        log_cap: int = 64 * 1024,
    ) -> None:
        self.limits = limits or Limits()
        probed = probe_isolation()
        if probed is None:
            if not allow_weak:
                raise SandboxUnavailable(
                    "this machine cannot make network/PID/mount namespaces (unshare failed), "
                    "so jobs would have network access; the node refuses to run jobs. Enable "
                    "user namespaces or run as root, or start the node with the weak sandbox "
                    "explicitly allowed (jobs then have NO network isolation)"
                )
            probed = Isolation.WEAK
        self.isolation = probed
        self.scratch_dir = Path(scratch_dir or tempfile.gettempdir())
        self.needed = _needed()
        wanted = [*DEFAULT_HIDDEN, *(os.path.realpath(h) for h in hide)]
        # "/" cannot be hidden; /tmp always is (the job's mount point lives on it).
        self.hidden = [p for p in dict.fromkeys(wanted) if p != "/"]
        self.as_root = os.geteuid() == 0
        self.uid = (sandbox_uid or _next_uid()) if self.as_root else None
        self.log_cap = log_cap

    @contextlib.contextmanager
    def run(
        self,
        algorithm: bytes,
        inputs: Mapping[int, Path],
        params: Any,
        *,
        dp: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
    ) -> Iterator[SandboxResult]:
        """Run `algorithm` (the file's bytes) on `inputs` with `params` (JSON-able).

        Yields the :class:`SandboxResult`; its ``output_dir`` exists until the
        ``with`` block ends, then the private directory is removed.
        """
        limits = limits or self.limits
        root = Path(tempfile.mkdtemp(prefix="datagora-job-", dir=self.scratch_dir))
        logs = Path(tempfile.mkdtemp(prefix="datagora-logs-", dir=self.scratch_dir))
        try:
            yield self._run(root, logs, algorithm, inputs, params, dp, limits)
        finally:
            if self.uid is not None:
                _kill_uid(self.uid)
            _remove_tree(root)
            _remove_tree(logs)

    def _prepare(
        self, root: Path, algorithm: bytes, inputs: Mapping[int, Path], params: Any
    ) -> tuple[dict[str, str], int]:
        os.chmod(root, 0o700)
        for name in ("inputs", "output", "home", "tmp"):
            (root / name).mkdir(mode=0o700)
        relative: dict[str, str] = {}
        input_bytes = 0
        for dataset, source in inputs.items():
            folder = root / "inputs" / str(int(dataset))
            folder.mkdir(mode=0o700)
            target = folder / Path(source).name
            shutil.copyfile(source, target)
            os.chmod(target, 0o400)
            relative[str(int(dataset))] = str(target.relative_to(root))
            input_bytes += target.stat().st_size
        (root / "algorithm.py").write_bytes(algorithm)
        (root / "params.json").write_text(json.dumps(params), "utf-8")
        for name in ("algorithm.py", "params.json"):
            os.chmod(root / name, 0o400)
        if self.uid is not None:
            for dirpath, dirnames, filenames in os.walk(root):
                for name in [*dirnames, *filenames]:
                    os.chown(os.path.join(dirpath, name), self.uid, self.uid)
            os.chown(root, self.uid, self.uid)
        return relative, input_bytes

    def _run(
        self,
        root: Path,
        logs: Path,
        algorithm: bytes,
        inputs: Mapping[int, Path],
        params: Any,
        dp: Mapping[str, Any] | None,
        limits: Limits,
    ) -> SandboxResult:
        relative, input_bytes = self._prepare(root, algorithm, inputs, params)
        namespaces = self.isolation is Isolation.NAMESPACES
        inside = _runner.JOB_ROOT_IN_SANDBOX if namespaces else str(root)
        config = {
            "root": str(root),
            "mount": namespaces,
            "hide": self.hidden,
            "keep": self.needed,
            "uid": self.uid,
            "gid": self.uid,
            "limits": limits.runner_json(),
            "inputs": relative,
            "dp": dict(dp) if dp is not None else None,
        }
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": f"{inside}/home",
            "TMPDIR": f"{inside}/tmp",
            "MPLCONFIGDIR": f"{inside}/tmp",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        command = [sys.executable, "-I", "-B", str(_RUNNER), json.dumps(config)]
        if namespaces:
            command = [*_unshare_prefix(self.as_root), *command]
        started = time.monotonic()
        killed = ""
        with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
            proc = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            try:
                killed = self._watch(proc, root, input_bytes, limits, started)
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        wall = time.monotonic() - started
        if self.uid is not None:
            _kill_uid(self.uid)
        elif not namespaces:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        code = proc.returncode
        reason = killed or _reason(code)
        stdout, t1 = _read_capped(logs / "stdout", self.log_cap)
        stderr, t2 = _read_capped(logs / "stderr", self.log_cap)
        return SandboxResult(
            ok=not reason,
            reason=reason,
            exit_code=code,
            output_dir=root / "output",
            stdout=stdout,
            stderr=stderr,
            logs_truncated=t1 or t2,
            wall_s=wall,
            isolation=self.isolation,
            input_paths={int(k): root / v for k, v in relative.items()},
        )

    def _watch(
        self,
        proc: subprocess.Popen[bytes],
        root: Path,
        input_bytes: int,
        limits: Limits,
        started: float,
    ) -> str:
        """Wait for the job; kill its process group on wall time or disk use. The reason."""
        next_disk = started
        while True:
            try:
                proc.wait(timeout=0.05)
                return ""
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - started > limits.wall_s:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return f"wall-clock limit reached ({limits.wall_s:g} s)"
            if now >= next_disk:
                next_disk = now + 0.25
                if _tree_bytes(root) - input_bytes > limits.disk_bytes:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return f"disk use limit reached ({limits.disk_bytes} bytes)"


def _reason(code: int | None) -> str:
    if code == 0:
        return ""
    if code is None:
        return "the job did not finish"
    if code < 0:
        sig = -code
        if sig == signal.SIGKILL:
            return "killed by the kernel (CPU time hard limit or out of memory)"
        if sig == signal.SIGXCPU:
            return EXIT_REASONS[_runner.EXIT_CPU]
        if sig == signal.SIGXFSZ:
            return EXIT_REASONS[_runner.EXIT_FILE_SIZE]
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"the job was killed by signal {name}"
    return EXIT_REASONS.get(code, f"the job exited with status {code}")
