"""Writing files so that a reader (or a crash) never sees half of one.

A rename is atomic for readers at once, but durable only once the directory
holding the name is synced: after an OS crash, an unsynced directory may still
name the old file (or none). Both helpers here sync it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def sync_directory(path: Path) -> None:
    """fsync the directory `path`, so the names in it (a rename, a new file) survive
    an OS crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path | str, target: Path | str) -> None:
    """Rename `source` over `target` (already synced contents) and sync the directory."""
    os.replace(source, target)
    sync_directory(Path(target).parent)


def write_atomically(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`,
    then fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_directory(path.parent)
