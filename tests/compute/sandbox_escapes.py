"""What a dishonest consumer's job tries from inside the sandbox (shared by the tests that
run the sandbox as root and as an unprivileged user).

Each escape prints ``ESCAPED`` and returns normally if it works; if the sandbox holds,
it fails. The tests assert the job failed, for the reasons listed, and that neither
``ESCAPED`` nor a secret reached the logs.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

SECRET = "SECRET-5e2b-not-for-jobs"

GOOD = """
def run(inputs, params, output_dir):
    rows = next(iter(inputs.values())).path.read_text().count("\\n")
    (output_dir / "summary.txt").write_text(f"rows={rows}")
"""

# x86_64 numbers of the syscalls without a C library wrapper.
_SYSCALLS_X86_64 = {"pivot_root": 155, "keyctl": 250, "bpf": 321, "perf_event_open": 298}

SECCOMP_PROBE = f"""
import ctypes, json, os
def run(i, p, o):
    libc = ctypes.CDLL(None, use_errno=True)
    numbers = {_SYSCALLS_X86_64!r}
    calls = {{
        "mount": lambda: libc.mount(b"none", b"/job/work/tmp", b"tmpfs", 0, None),
        "umount2": lambda: libc.umount2(b"/job/in", 2),
        "unshare": lambda: libc.unshare(0x10000000),
        "setns": lambda: libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0),
        "ptrace": lambda: libc.ptrace(0, 0, None, None),
        "chroot": lambda: libc.chroot(b"/job/work"),
        "pivot_root": lambda: libc.syscall(numbers["pivot_root"], b"/job", b"/job/in"),
        "keyctl": lambda: libc.syscall(numbers["keyctl"], 0, 0, 0, 0, 0),
        "bpf": lambda: libc.syscall(numbers["bpf"], 0, None, 0),
        "perf_event_open": lambda: libc.syscall(numbers["perf_event_open"], None, 0, -1, -1, 0),
    }}
    seen = {{}}
    for name, call in calls.items():
        ctypes.set_errno(0)
        result = call()
        seen[name] = "ESCAPED" if result == 0 else ctypes.get_errno()
    print(json.dumps(seen))
"""
"""A job that reports the errno of each forbidden syscall (x86_64): all must be EPERM."""

SECCOMP_CHECKED = ["mount", "umount2", "unshare", "setns", "ptrace", "chroot"] + (
    list(_SYSCALLS_X86_64) if platform.machine() == "x86_64" else []
)


def _raise_errno(call: str) -> str:
    return (
        f"    if ({call}) == 0:\n"
        "        print('ESCAPED')\n"
        "        return\n"
        "    raise OSError(ctypes.get_errno(), 'refused')\n"
    )


def escapes(
    port: int, secrets: Sequence[Path], read_only: Sequence[Path]
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (algorithm, words one of which the failure reason contains)."""
    cases: dict[str, tuple[str, tuple[str, ...]]] = {}
    for path in secrets:
        cases[f"read {path}"] = (
            f"def run(i, p, o):\n    print(open({str(path)!r}).read())\n    print('ESCAPED')\n",
            ("file",),
        )
    for folder in read_only:
        target = str(folder / "datagora_planted.py")
        cases[f"write into {folder}"] = (
            f"def run(i, p, o):\n    open({target!r}, 'w').write('x')\n    print('ESCAPED')\n",
            ("file", "raised"),
        )
    libc = "import ctypes\ndef run(i, p, o):\n    libc = ctypes.CDLL(None, use_errno=True)\n"
    cases["mount a tmpfs"] = (
        libc + _raise_errno('libc.mount(b"none", b"/job/in", b"tmpfs", 0, None)'),
        ("raised",),
    )
    cases["unmount the inputs"] = (libc + _raise_errno('libc.umount2(b"/job/in", 2)'), ("raised",))
    cases["ptrace"] = (libc + _raise_errno("libc.ptrace(0, 0, None, None)"), ("raised",))
    cases["unshare a user namespace"] = (
        libc + _raise_errno("libc.unshare(0x10000000)"),
        ("raised",),
    )
    cases["loopback"] = (
        "import socket\ndef run(i, p, o):\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "    print('ESCAPED')\n",
        ("network",),
    )
    cases["fork bomb"] = (
        "import os\ndef run(i, p, o):\n    while True:\n        os.fork()\n",
        ("process",),
    )
    cases["inode bomb"] = (
        "def run(i, p, o):\n    for k in range(10**7):\n        open(f'/tmp/{k}', 'w').close()\n",
        ("disk use",),
    )
    cases["huge output"] = (
        "def run(i, p, o):\n    for k in range(10**4):\n"
        "        (o / f'part{k}').write_bytes(b'x' * (1 << 20))\n",
        ("disk use", "file size"),
    )
    return cases
