"""Run an untrusted algorithm next to the data, in a bubblewrap sandbox.

An algorithm is a Python file defining ``run(inputs, params, output_dir)`` (see
``docs/compute.md``). :meth:`Sandbox.run` puts the inputs, the algorithm and its
parameters in a fresh private directory (mode 0700), starts the fixed runner
(:mod:`datagora.compute._runner`) in a ``bwrap`` sandbox, enforces a wall-clock
limit, collects the output and removes everything afterwards whatever happened.

What a job gets (:attr:`Isolation.BUBBLEWRAP`):

- its own PID, network, IPC, UTS and cgroup namespaces (and user namespace when
  the node is not root): no network at all, no other process visible; when the
  sandbox's first process ends, the kernel ends every process of the job;
- a read-only root holding only ``/usr``, the Python installation and the
  directories on the job interpreter's ``sys.path``: no ``/home``, ``/root``,
  ``/etc``, host ``/tmp``, node state, keys, data directory or checkout;
- its inputs read-only under ``/job/in``; ``/job/work`` (``output``, ``tmp`` —
  also ``/tmp`` — and ``home``) on a private tmpfs capped in bytes (``size=``)
  and in files (``nr_inodes=``). bwrap 0.8's ``--tmpfs`` takes a size but no inode
  cap, so ``unshare`` makes a private mount namespace around bwrap and ``mount``
  puts the tmpfs there; the output is copied out after the job ends;
- no capabilities, ``--new-session``, no user namespaces of its own, the seccomp
  filter of :mod:`datagora.compute.seccomp`, and an unprivileged uid: 65534 in a
  user namespace when the node is not root, a dedicated uid (``setpriv``) when it is;
- rlimits per process (CPU, address space, file size, processes, open files) and,
  where the cgroup v1 controllers are writable (a root node), memory, process and
  CPU-time limits for the job as a whole.

Without bwrap the node refuses jobs unless its operator allows the weak mode
(:attr:`Isolation.WEAK`: rlimits, a clean environment and, for a root node, a uid
drop — no network or filesystem isolation). What no mode prevents is written down
in ``docs/threat-model.md``: kernel exploits, side channels, CPU timing.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import functools
import itertools
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from datagora.compute import _runner, seccomp
from datagora.compute.errors import SandboxUnavailable

__all__ = [
    "DEFAULT_HIDDEN",
    "EXIT_REASONS",
    "JOB_ROOT",
    "Isolation",
    "Limits",
    "Sandbox",
    "SandboxResult",
    "bubblewrap_problem",
    "claim_uid",
    "probe_isolation",
]

log = logging.getLogger(__name__)

_RUNNER: Final = Path(_runner.__file__).resolve()
_MiB: Final = 1 << 20
JOB_ROOT: Final = "/job"
"""Where the job's directory is inside the sandbox (``in/`` and ``work/``)."""
_RUNNER_INSIDE: Final = "/sandbox/runner.py"
_JOB_UID: Final = 65534
_CGROUPS: Final = Path("/sys/fs/cgroup")
_CONTROLLERS: Final = ("memory", "pids", "cpuacct")
_INSTALL_HINT: Final = "'make setup' as root installs it (apt-get install bubblewrap)"

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
"""Directories never visible in the sandbox, even inside a directory it binds
(covered there by an empty tmpfs); the node adds its data and dataset directories."""

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
    _runner.EXIT_DISK: "disk use limit reached (the job's private disk is full: bytes or files)",
    _runner.EXIT_OUTPUT: "the job's output could not be collected (a file in it is unreadable)",
}


class Isolation(enum.Enum):
    """How strongly jobs are isolated on this machine."""

    BUBBLEWRAP = "bubblewrap"
    """The bwrap sandbox described above: the normal mode."""
    WEAK = "weak"
    """Only resource limits, a clean environment and a process group. No network or
    filesystem isolation at all: used only when the operator explicitly allows it."""


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
    """Everything the job writes (output, temporary files): the size of its tmpfs."""
    files: int = 20_000
    """Files and directories the job may create (the ``nr_inodes`` of its tmpfs)."""

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
    uid: int | None = None
    """The uid the job ran as on the host (a root node's claimed uid; None otherwise)."""
    input_paths: dict[int, Path] = field(default_factory=dict)


_probe_cache: dict[int, str | None] = {}
_job_counter = itertools.count()

SANDBOX_UIDS: Final = range(61000, 65000)
"""The uids a root node's jobs run as, one per running job."""
UID_LOCKS: Final = Path("/run/datagora-sandbox-uids")
"""Where running jobs claim their uid: one file per uid, held with ``flock``."""


@contextlib.contextmanager
def claim_uid(uids: range = SANDBOX_UIDS, locks: Path = UID_LOCKS) -> Iterator[int]:
    """A uid of `uids` that no other running job holds, held until the block ends.

    Every job of every node on the machine claims its uid here: an exclusive ``flock``
    on ``locks/<uid>``, taken without waiting, so two jobs (two workers of one node,
    or two nodes) never share a uid, and the kernel drops the claim of a process that
    dies. A shared uid would share the per-uid process limit, and in the weak mode
    each job's files and the other's clean-up kill. Raises :class:`SandboxUnavailable`
    when every uid is held, or when `locks` is writable by others.
    """
    locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = locks.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxUnavailable(
            f"{locks} must belong to uid {os.geteuid()} and be writable by it alone"
        )
    start = secrets.randbelow(len(uids))
    for i in range(len(uids)):
        uid = uids[(start + i) % len(uids)]
        fd = os.open(locks / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)  # closing the last descriptor releases the lock
        return
    raise SandboxUnavailable(
        f"every sandbox uid ({uids.start}-{uids.stop - 1}) is held by a running job"
    )


def bubblewrap_problem() -> str | None:
    """Why jobs cannot run in bubblewrap on this machine, or None if they can.

    Checked once per process and uid by running a trivial job through the same
    command line real jobs use.
    """
    uid = os.geteuid()
    if uid not in _probe_cache:
        _probe_cache[uid] = _probe_bubblewrap()
    return _probe_cache[uid]


def probe_isolation() -> Isolation | None:
    """:attr:`Isolation.BUBBLEWRAP` if jobs can run in bubblewrap here, else None."""
    return Isolation.BUBBLEWRAP if bubblewrap_problem() is None else None


def _probe_bubblewrap() -> str | None:
    for tool in ("bwrap", "unshare", "mount", "setpriv", "cp"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            if tool == "bwrap":
                return f"bubblewrap (bwrap) is not installed: {_INSTALL_HINT}"
            return f"{tool} is not installed (util-linux / coreutils)"
    try:
        bpf = seccomp.filter_bpf()
    except (ImportError, OSError, RuntimeError) as exc:
        return f"the seccomp filter cannot be built (pyseccomp and libseccomp2 needed): {exc}"
    uid = _JOB_UID if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="datagora-probe-"))
    try:
        for name in ("in", "work", "out"):
            (root / name).mkdir()
        if uid is not None:
            for path in (root, *root.iterdir()):
                os.chown(path, uid, uid)
        fd = _memfd(bpf)
        try:
            command = _wrap(
                root, uid, Limits(), (), (), (), {"PATH": "/usr/bin"}, fd, ["/usr/bin/true"]
            )
            done = subprocess.run(
                command,
                cwd=root,
                env=_WRAPPER_ENV,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start a sandbox: {exc}"
    finally:
        _remove_tree(root)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return "bubblewrap could not start a sandbox here" + (f": {said[-1]}" if said else "")
    return None


_WRAPPER_ENV: Final = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("datagora-seccomp", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


@functools.cache
def _interpreter_paths() -> tuple[tuple[str, str], ...]:
    """(source, destination) pairs the job's interpreter needs, bound read-only: the
    Python installation, the virtual environment and every directory on the ``sys.path``
    of ``python -I`` (site-packages, an editable install's source)."""
    shown = subprocess.run(
        [sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    wanted = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)]
    wanted += [p for p in json.loads(shown.stdout) if isinstance(p, str)]
    pairs: dict[str, str] = {}
    for path in wanted:
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        for dest in dict.fromkeys((path, real)):
            pairs[dest] = real
    kept: list[tuple[str, str]] = []
    for dest in sorted(pairs):
        src = pairs[dest]
        if _inside(dest, "/usr") and src == dest:
            continue  # /usr is bound whole
        covered = any(
            _inside(dest, d) and src == s.rstrip("/") + dest[len(d.rstrip("/")) :] for s, d in kept
        )
        if not covered:
            kept.append((src, dest))
    return tuple(kept)


def _wrap(
    root: Path,
    uid: int | None,
    limits: Limits,
    binds: Sequence[tuple[str, str]],
    hidden: Sequence[str],
    cgroup_procs: Sequence[str],
    env: Mapping[str, str],
    seccomp_fd: int,
    command: Sequence[str],
) -> list[str]:
    """The command line of one job: unshare → sh (tmpfs, cgroups) → bwrap → command.

    ``uid`` is the dedicated uid of a root node (None: the node is not root). Run it
    with the job directory `root` as the working directory.
    """
    work = root / "work"
    bw = ["bwrap"]
    if uid is not None:
        # Root: no user namespace (it would map only root), so setpriv drops to `uid`
        # inside; it needs these three capabilities, and gives them up with the uid.
        bw += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        bw += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        bw += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    else:
        bw += ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        bw += ["--uid", str(_JOB_UID), "--gid", str(_JOB_UID)]
    bw += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in env.items():
        bw += ["--setenv", key, value]
    bw += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):
            bw += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            bw += ["--ro-bind", top, top]
    bw += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    bw += ["--proc", "/proc", "--dev", "/dev"]
    # /tmp first: a directory bound below it (a venv in /tmp) then stays visible.
    bw += ["--bind", str(work / "tmp"), "/tmp"]
    # bwrap would make the parents of a bind with their host modes (/root: 0700).
    parents = {str(p) for _, dest in binds for p in Path(dest).parents if str(p) != "/"}
    parents |= {JOB_ROOT, os.path.dirname(_RUNNER_INSIDE)}
    for parent in sorted(parents - {"/usr"}):
        bw += ["--perms", "0755", "--dir", parent]
    for src, dest in binds:
        bw += ["--ro-bind", src, dest]
    for path in hidden:  # empty, tiny, read-only
        bw += ["--size", "4096", "--perms", "0555", "--tmpfs", path, "--remount-ro", path]
    bw += ["--ro-bind", str(root / "in"), f"{JOB_ROOT}/in"]
    bw += ["--bind", str(work), f"{JOB_ROOT}/work"]
    bw += ["--ro-bind", str(_RUNNER), _RUNNER_INSIDE]
    bw += ["--remount-ro", "/", "--seccomp", str(seccomp_fd), "--chdir", JOB_ROOT]
    drop: list[str] = []
    if uid is not None:
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        bw += [*drop, "--inh-caps=-all", "--bounding-set=-all", "--"]
    bw += list(command)

    q = shlex.quote
    # Relative paths from the job directory (the working directory): the sandbox uid
    # may not be able to traverse the scratch directory's parents.
    opts = f"size={limits.disk_bytes},nr_inodes={limits.files},mode=0700,nosuid,nodev"
    if uid is not None:
        opts += f",uid={uid},gid={uid}"
    setup = _runner.EXIT_SETUP
    script = [f"echo $$ > {q(procs)} || exit {setup}" for procs in cgroup_procs]
    script += [
        f"mount -n -i -t tmpfs -o {opts} datagora-job work || exit {setup}",
        f"mkdir -m 1777 work/tmp || exit {setup}",
        '"$@"',
        "rc=$?",
        # The job's processes are gone (its PID namespace died with bwrap's child).
        f"if [ -d work/output ]; then {' '.join(drop)} cp -R work/output/. out/ "
        f"|| {{ [ $rc = 0 ] && rc={_runner.EXIT_OUTPUT}; }}; fi",
        "exit $rc",
    ]
    if uid is not None:
        outer = ["unshare", "--mount", "--propagation", "private"]
    else:
        outer = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
    return [*outer, "--", "/bin/sh", "-c", "\n".join(script), "sh", *bw]


def _cgroup_controllers() -> tuple[tuple[str, ...], str]:
    """The cgroup v1 controllers jobs are limited with here, and what is missing, why."""
    if os.geteuid() != 0:
        return (), "skipped: the node is not root (per-process rlimits only)"
    found = tuple(
        c
        for c in _CONTROLLERS
        if (_CGROUPS / c / "cgroup.procs").is_file() and os.access(_CGROUPS / c, os.W_OK)
    )
    missing = [c for c in _CONTROLLERS if c not in found]
    if not found:
        return (), "skipped: no writable cgroup v1 controller under /sys/fs/cgroup"
    return found, (f"without {', '.join(missing)} (not mounted or not writable)" if missing else "")


class _JobCgroup:
    """One job's cgroups (v1): memory and process caps, CPU time read by the parent."""

    def __init__(self, controllers: Sequence[str], name: str, limits: Limits) -> None:
        self.dirs: dict[str, Path] = {}
        try:
            for controller in controllers:
                folder = _CGROUPS / controller / "datagora" / name
                folder.mkdir(parents=True, exist_ok=True)
                self.dirs[controller] = folder
            if "memory" in self.dirs:
                # The tmpfs pages the job writes are charged to it too.
                total = limits.memory_bytes + limits.disk_bytes
                (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(total))
            if "pids" in self.dirs:
                # The wrapper, bwrap and its init process are in the group as well.
                (self.dirs["pids"] / "pids.max").write_text(str(limits.processes + 4))
        except OSError:
            self.remove()
            raise

    @property
    def procs(self) -> list[str]:
        return [str(folder / "cgroup.procs") for folder in self.dirs.values()]

    def cpu_s(self) -> float:
        folder = self.dirs.get("cpuacct")
        if folder is None:
            return 0.0
        try:
            return int((folder / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return 0.0

    def verdict(self) -> str:
        """Which job-wide limit the job hit, if any."""
        if _counter(self.dirs.get("memory"), "memory.oom_control", "oom_kill"):
            return "memory limit reached (the job's processes together)"
        if _counter(self.dirs.get("pids"), "pids.events", "max"):
            return EXIT_REASONS[_runner.EXIT_PROCESSES]
        return ""

    def remove(self) -> None:
        for folder in self.dirs.values():
            for _ in range(100):
                with contextlib.suppress(OSError, ValueError):
                    for pid in (folder / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def _remove_stale_cgroups(controllers: Sequence[str]) -> None:
    """Remove the (empty) cgroups of jobs whose node process is gone (a crashed node)."""
    for controller in controllers:
        with contextlib.suppress(OSError):
            for folder in (_CGROUPS / controller / "datagora").glob("job-*-*"):
                owner = folder.name.split("-")[1]
                if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                    with contextlib.suppress(OSError):
                        folder.rmdir()


def _counter(folder: Path | None, name: str, key: str) -> int:
    if folder is None:
        return 0
    with contextlib.suppress(OSError, ValueError):
        for line in (folder / name).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
    return 0


def _keep_plain(root: Path) -> None:
    """Remove everything under `root` that is neither a regular file nor a directory
    (symbolic links, FIFOs, sockets): the node then never follows a link the job made."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                os.unlink(full)
        dirnames[:] = [d for d in dirnames if os.path.isdir(os.path.join(dirpath, d))]


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

    Raises :class:`SandboxUnavailable` when bubblewrap cannot run here and
    ``allow_weak`` is false: a node never silently runs jobs without isolation.
    ``hide`` adds directories (the node's data directory, the datasets' folders) to
    :data:`DEFAULT_HIDDEN`: nothing outside the bound directories is visible anyway,
    and these are covered by an empty tmpfs should one lie inside them.
    ``uids`` are the unprivileged uids jobs run as when the node is root: each job
    claims one that no running job on the machine holds (:func:`claim_uid`), so the
    process limit and the weak mode's files and clean-up stay per job. When the node
    is not root, jobs run as uid 65534 in a user namespace of the node's uid. In the
    weak mode, the sandbox uid must be able to reach ``scratch_dir`` (the default, the
    system's temporary directory, is).
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        allow_weak: bool = False,
        scratch_dir: Path | None = None,
        hide: Sequence[Path | str] = (),
        uids: range = SANDBOX_UIDS,
        log_cap: int = 64 * 1024,
    ) -> None:
        self.limits = limits or Limits()
        problem = bubblewrap_problem()
        if problem is not None and not allow_weak:
            raise SandboxUnavailable(
                f"{problem}. The node refuses to run jobs without the sandbox; install "
                "bubblewrap, or start the node with --allow-weak-sandbox (jobs then have NO "
                "network or filesystem isolation)"
            )
        self.isolation = Isolation.BUBBLEWRAP if problem is None else Isolation.WEAK
        self.problem = problem or ""
        self.scratch_dir = Path(scratch_dir or tempfile.gettempdir())
        self.as_root = os.geteuid() == 0
        self.uids = uids
        self.log_cap = log_cap
        self.binds: tuple[tuple[str, str], ...] = ()
        self.hidden: list[str] = []
        self.controllers: tuple[str, ...] = ()
        self.cgroups = "skipped: weak sandbox"
        if self.isolation is Isolation.BUBBLEWRAP:
            self.binds = _interpreter_paths()
            wanted = [*DEFAULT_HIDDEN, *(os.path.realpath(h) for h in hide)]
            for path in dict.fromkeys(wanted):
                for src, dest in self.binds:
                    if _inside(path, src) and path != src:
                        self.hidden.append(dest.rstrip("/") + path[len(src.rstrip("/")) :])
            self.controllers, note = _cgroup_controllers()
            _remove_stale_cgroups(self.controllers)
            self.cgroups = ",".join(self.controllers) + (f" ({note})" if note else "")
            if not self.controllers:
                self.cgroups = note
        else:
            log.warning("compute jobs run in the WEAK sandbox: %s", problem)

    def describe(self) -> dict[str, str]:
        """What this sandbox is, for a node's health and the benchmarks."""
        return {"sandbox": self.isolation.value, "cgroups": self.cgroups}

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
        with contextlib.ExitStack() as stack:
            uid = stack.enter_context(claim_uid(self.uids)) if self.as_root else None
            weak = self.isolation is Isolation.WEAK
            if uid is not None and weak:
                _kill_uid(uid)  # anything a crashed node's job left under this uid
            root = Path(tempfile.mkdtemp(prefix="datagora-job-", dir=self.scratch_dir))
            logs = Path(tempfile.mkdtemp(prefix="datagora-logs-", dir=self.scratch_dir))
            try:
                yield self._run(uid, root, logs, algorithm, inputs, params, dp, limits)
            finally:
                if uid is not None and weak:
                    _kill_uid(uid)
                # Before the uid is released: the next job with it never sees these.
                _remove_tree(root)
                _remove_tree(logs)

    def _prepare(
        self, uid: int | None, root: Path, algorithm: bytes, inputs: Mapping[int, Path], params: Any
    ) -> tuple[dict[str, str], int]:
        os.chmod(root, 0o700)
        for name in ("in", "in/inputs", "work", "out"):
            (root / name).mkdir(mode=0o700)
        relative: dict[str, str] = {}
        input_bytes = 0
        for dataset, source in inputs.items():
            folder = root / "in" / "inputs" / str(int(dataset))
            folder.mkdir(mode=0o700)
            target = folder / Path(source).name
            shutil.copyfile(source, target)
            os.chmod(target, 0o400)
            relative[str(int(dataset))] = str(target.relative_to(root / "in"))
            input_bytes += target.stat().st_size
        (root / "in" / "algorithm.py").write_bytes(algorithm)
        (root / "in" / "params.json").write_text(json.dumps(params), "utf-8")
        for name in ("algorithm.py", "params.json"):
            os.chmod(root / "in" / name, 0o400)
        if uid is not None:
            for dirpath, dirnames, filenames in os.walk(root):
                for name in [*dirnames, *filenames]:
                    os.chown(os.path.join(dirpath, name), uid, uid)
            os.chown(root, uid, uid)
        return relative, input_bytes

    def _run(
        self,
        uid: int | None,
        root: Path,
        logs: Path,
        algorithm: bytes,
        inputs: Mapping[int, Path],
        params: Any,
        dp: Mapping[str, Any] | None,
        limits: Limits,
    ) -> SandboxResult:
        relative, input_bytes = self._prepare(uid, root, algorithm, inputs, params)
        boxed = self.isolation is Isolation.BUBBLEWRAP
        inside = JOB_ROOT if boxed else str(root)
        ready, ready_w = os.pipe()
        config = {
            "root": inside,
            "uid": None if boxed else uid,
            "gid": None if boxed else uid,
            "limits": limits.runner_json(),
            "inputs": relative,
            "dp": dict(dp) if dp is not None else None,
            "ready_fd": ready_w,
        }
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": f"{inside}/work/home",
            "TMPDIR": "/tmp" if boxed else f"{inside}/work/tmp",
            "MPLCONFIGDIR": "/tmp" if boxed else f"{inside}/work/tmp",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        runner = _RUNNER_INSIDE if boxed else str(_RUNNER)
        command = [sys.executable, "-I", "-B", runner, json.dumps(config)]
        fds = [ready_w]
        cgroup: _JobCgroup | None = None
        try:
            if boxed:
                if self.controllers:
                    name = f"job-{os.getpid()}-{next(_job_counter)}"
                    try:
                        cgroup = _JobCgroup(self.controllers, name, limits)
                    except OSError as exc:
                        log.warning("job runs without cgroup limits: %s", exc)
                fds.append(_memfd(seccomp.filter_bpf()))
                command = _wrap(
                    root,
                    uid,
                    limits,
                    self.binds,
                    self.hidden,
                    cgroup.procs if cgroup else (),
                    env,
                    fds[-1],
                    command,
                )
                env = _WRAPPER_ENV
            started = time.monotonic()
            killed = ""
            with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
                try:
                    proc = subprocess.Popen(
                        command,
                        cwd=root,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                        close_fds=True,
                        pass_fds=fds,
                    )
                finally:
                    for fd in fds:
                        os.close(fd)
                try:
                    killed = self._watch(proc, root, input_bytes, limits, started, cgroup)
                finally:
                    if proc.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            wall = time.monotonic() - started
            if not boxed:
                if uid is not None:
                    _kill_uid(uid)
                else:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
            os.set_blocking(ready, False)
            try:
                started_ok = os.read(ready, 1) == b"1"
            except BlockingIOError:
                started_ok = False
            code = proc.returncode
            reason = killed or _reason(code)
            if reason and not killed and cgroup is not None and code not in EXIT_REASONS:
                reason = cgroup.verdict() or reason
            if reason and not started_ok and not killed:
                reason = EXIT_REASONS[_runner.EXIT_SETUP]
                said = (logs / "stderr").read_bytes()[-400:].decode(errors="replace").strip()
                log.error("a job's sandbox did not start (exit %s): %s", code, said)
        finally:
            os.close(ready)
            if cgroup is not None:
                cgroup.remove()
        output_dir = root / "out" if boxed else root / "work" / "output"
        output_dir.mkdir(exist_ok=True)
        _keep_plain(output_dir)
        stdout, t1 = _read_capped(logs / "stdout", self.log_cap)
        stderr, t2 = _read_capped(logs / "stderr", self.log_cap)
        return SandboxResult(
            ok=not reason,
            reason=reason,
            exit_code=code,
            output_dir=output_dir,
            stdout=stdout,
            stderr=stderr,
            logs_truncated=t1 or t2,
            wall_s=wall,
            isolation=self.isolation,
            uid=uid,
            input_paths={int(k): root / "in" / v for k, v in relative.items()},
        )

    def _watch(
        self,
        proc: subprocess.Popen[bytes],
        root: Path,
        input_bytes: int,
        limits: Limits,
        started: float,
        cgroup: _JobCgroup | None,
    ) -> str:
        """Wait for the job; kill its process group on wall time, CPU time or (weak mode)
        disk use. The reason."""
        next_check = started
        while True:
            try:
                proc.wait(timeout=0.02)
                return ""
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            reason = ""
            if now - started > limits.wall_s:
                reason = f"wall-clock limit reached ({limits.wall_s:g} s)"
            elif now >= next_check:
                next_check = now + 0.25
                if cgroup is not None and cgroup.cpu_s() > limits.cpu_s:
                    reason = "CPU time limit reached (the job's processes together)"
                elif (
                    self.isolation is Isolation.WEAK
                    and _tree_bytes(root) - input_bytes > limits.disk_bytes
                ):
                    reason = f"disk use limit reached ({limits.disk_bytes} bytes)"
            if reason:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return reason


def _reason(code: int | None) -> str:
    if code == 0:
        return ""
    if code is None:
        return "the job did not finish"
    if code < 0 or code > 128:
        # A signal: negative from Popen, 128 + N from sh or bwrap.
        sig = -code if code < 0 else code - 128
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
