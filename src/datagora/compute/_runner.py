"""The fixed program a sandboxed job runs: set up, import the algorithm, call it.

Started by :mod:`datagora.compute.sandbox` as ``python -I -B runner.py CONFIG_JSON``,
inside ``bwrap`` (already unprivileged, without capabilities, under the seccomp
filter) or, in the weak mode an operator must allow explicitly, directly. It

1. signals on ``ready_fd`` that the sandbox was set up (so the node can tell a
   sandbox that could not start from an algorithm that failed), then closes it;
2. sets the resource limits (CPU seconds, address space, file size, processes,
   open files) and ``PR_SET_NO_NEW_PRIVS``; in the weak mode it also drops to the
   sandbox uid/gid when started as root;
3. makes the job's ``work/{output,tmp,home}`` directories;
4. imports ``in/algorithm.py`` by path and calls ``run(inputs, params, output_dir)``.

The outcome is reported by exit status only (see :data:`EXIT_REASONS` in
``sandbox.py``): nothing the algorithm can write is trusted as a reason, so no
text from inside the sandbox reaches the node's records or the chain. Tracebacks
go to stderr, which is part of the consumer's (policy-checked, encrypted) logs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.util
import json
import os
import resource
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_RAISED = 1
EXIT_SETUP = 2
EXIT_MEMORY = 3
EXIT_NETWORK = 4
EXIT_FILE_ACCESS = 5
EXIT_PROCESSES = 6
EXIT_CPU = 7
EXIT_FILE_SIZE = 8
EXIT_EPSILON = 9
EXIT_NO_ENTRY = 10
EXIT_DISK = 11
EXIT_OUTPUT = 12

_PR_SET_NO_NEW_PRIVS = 38
_NETWORK_ERRNOS = {
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTUNREACH,
    errno.ECONNREFUSED,
    errno.EADDRNOTAVAIL,
}


class _CpuLimit(BaseException):
    """Raised in the algorithm on SIGXCPU (a BaseException: `except Exception` misses it)."""


class Input:
    """One dataset given to the algorithm: ``path`` always, ``frame`` for CSV/TSV/Parquet."""

    def __init__(self, dataset: int, path: Path) -> None:
        self.dataset = dataset
        self.path = path
        self._frame: Any = None

    @property
    def frame(self) -> Any:
        """The table as a pandas DataFrame, loaded on first use."""
        if self._frame is None:
            import pandas

            suffix = self.path.suffix.lower()
            if suffix == ".csv":
                self._frame = pandas.read_csv(self.path)
            elif suffix == ".tsv":
                self._frame = pandas.read_csv(self.path, sep="\t")
            elif suffix in (".parquet", ".pq"):
                self._frame = pandas.read_parquet(self.path)
            else:
                raise TypeError(f"input {self.dataset} ({suffix or 'no suffix'}) is not a table")
        return self._frame

    def __repr__(self) -> str:
        return f"Input(dataset={self.dataset}, path={str(self.path)!r})"


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(which, (soft, soft if hard is None else hard))


def _set_limits(limits: dict[str, int]) -> None:
    _limit(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 2)
    _limit(resource.RLIMIT_AS, limits["memory_bytes"])
    _limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    _limit(resource.RLIMIT_NPROC, limits["processes"])
    _limit(resource.RLIMIT_NOFILE, limits["open_files"])
    _limit(resource.RLIMIT_CORE, 0)


def _drop_privileges(uid: int | None, gid: int | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise OSError(errno.EPERM, "could not drop privileges")


def _on_xcpu(signum: int, frame: object) -> None:
    raise _CpuLimit()


def _budget_errors() -> tuple[type[BaseException], ...]:
    """The classes that mean "over the privacy budget", from the modules the job imported.

    An algorithm can only raise them after importing their modules, so the runner
    looks them up there rather than importing datagora or diffprivlib itself, and
    matches classes, not class names.
    """
    found: list[type[BaseException]] = []
    for module, name in (
        ("datagora.compute.errors", "EpsilonExceeded"),
        ("diffprivlib.utils", "BudgetError"),
    ):
        loaded = sys.modules.get(module)
        kind = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(kind, type) and issubclass(kind, BaseException):
            found.append(kind)
    return tuple(found)


def classify(exc: BaseException, root: str) -> int:
    """The exit status for an exception escaping the algorithm (its cause chain included)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CpuLimit):
            return EXIT_CPU
        if isinstance(current, MemoryError):
            return EXIT_MEMORY
        if isinstance(current, _budget_errors()):
            return EXIT_EPSILON
        if isinstance(current, socket.gaierror | ConnectionError):
            return EXIT_NETWORK
        if isinstance(current, OSError):
            if current.errno in _NETWORK_ERRNOS:
                return EXIT_NETWORK
            if current.errno == errno.EFBIG:
                return EXIT_FILE_SIZE
            if current.errno in (errno.ENOSPC, errno.EDQUOT):
                return EXIT_DISK
            if current.errno == errno.EAGAIN and isinstance(current, BlockingIOError):
                return EXIT_PROCESSES
            name = current.filename
            if isinstance(current, PermissionError | FileNotFoundError) and isinstance(name, str):
                full = os.path.abspath(name)
                if not (full == root or full.startswith(root + os.sep)):
                    return EXIT_FILE_ACCESS
        current = current.__cause__ or current.__context__
    return EXIT_RAISED


def main() -> int:
    cfg = json.loads(sys.argv[1])
    main_pid = os.getpid()
    try:
        ready = cfg.get("ready_fd")
        if ready is not None:
            os.write(ready, b"1")
            os.close(ready)
        root = cfg["root"]
        _set_limits(cfg["limits"])
        _drop_privileges(cfg.get("uid"), cfg.get("gid"))
        # After the drop: the job's own directories belong to the job's uid.
        work = os.path.join(root, "work")
        for name in ("output", "tmp", "home"):
            os.makedirs(os.path.join(work, name), mode=0o700, exist_ok=True)
        os.chdir(work)
        signal.signal(signal.SIGXCPU, _on_xcpu)
        # Writes past RLIMIT_FSIZE then fail with EFBIG instead of killing silently.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        inputs = {
            int(dataset): Input(int(dataset), Path(root, "in", rel))
            for dataset, rel in cfg["inputs"].items()
        }
        params = json.loads(Path(root, "in", "params.json").read_text("utf-8"))
        if cfg.get("dp") is not None:
            from datagora.compute import dp

            dp.install(cfg["dp"])
    except Exception:
        traceback.print_exc()
        return EXIT_SETUP
    output_dir = Path(work, "output")
    try:
        spec = importlib.util.spec_from_file_location("algorithm", Path(root, "in", "algorithm.py"))
        if spec is None or spec.loader is None:
            return EXIT_NO_ENTRY
        module = importlib.util.module_from_spec(spec)
        sys.modules["algorithm"] = module
        spec.loader.exec_module(module)
        entry = getattr(module, "run", None)
        if not callable(entry):
            print("the algorithm defines no run(inputs, params, output_dir)", file=sys.stderr)
            return EXIT_NO_ENTRY
        entry(inputs, params, output_dir)
    except SystemExit as exc:
        if os.getpid() != main_pid:
            os._exit(0)
        return EXIT_OK if exc.code in (None, 0) else EXIT_RAISED
    except BaseException as exc:
        if os.getpid() != main_pid:
            os._exit(classify(exc, root))
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        return classify(exc, root)
    if os.getpid() != main_pid:
        os._exit(0)
    return EXIT_OK


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
