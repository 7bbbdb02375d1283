"""The syscall filter every sandboxed job runs under (a seccomp BPF program for ``bwrap``).

Built with libseccomp (through ``pyseccomp``), which resolves syscall names for the
machine's architecture and kills any syscall made through another ABI (32-bit
``int 0x80``, x32), so the list below cannot be side-stepped by switching ABIs.
Everything not listed is allowed: the job is already unprivileged, without
capabilities, in its own namespaces; the filter closes the kernel interfaces that
are still reachable from there and have been the door of past escapes.
"""

from __future__ import annotations

import errno
import functools
import tempfile
from typing import Final

__all__ = ["DENIED", "NAMESPACE_FLAGS", "filter_bpf"]

DENIED: Final = (
    # Mounts and root changes: the job's view of the filesystem is fixed.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    # New or other namespaces (clone with namespace flags: below).
    "unshare",
    "setns",
    # Other processes' memory.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    # The kernel keyring, BPF, perf, userfaultfd: large attack surfaces a job never needs.
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    # Files by handle (bypasses path checks), modules, kexec, swap, reboot, accounting.
    "open_by_handle_at",
    "name_to_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "syslog",
    "iopl",
    "ioperm",
    "vhangup",
)
"""Syscalls that fail with EPERM inside the sandbox."""

NAMESPACE_FLAGS: Final = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
"""clone() flags that make namespaces: clone with any of them fails with EPERM."""


@functools.cache
def filter_bpf() -> bytes:
    """The compiled filter (raises OSError or ImportError if libseccomp is missing)."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture (iopl on arm64, …)
    for flag in NAMESPACE_FLAGS.values():
        rules.add_rule(
            seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag)
        )
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes the C
    # library fall back to clone, whose flags are checked above.
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()
