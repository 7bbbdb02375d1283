"""The result archive: only the job's own regular files leave, and they unpack with the
time they arrived (the archive itself is deterministic: mtime 0 inside)."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from datagora.compute.client import extract_archive
from datagora.compute.policy import archive_output


def test_links_never_leave_and_files_unpack_with_their_arrival_time(tmp_path: Path) -> None:
    secret = tmp_path / "node-key"
    secret.write_text("the node's private key")
    out = tmp_path / "output"
    (out / "model").mkdir(parents=True)
    (out / "model" / "weights.json").write_text('{"w": [1, 2]}')
    (out / "leak.txt").symlink_to(secret)
    (out / "model" / "dir-link").symlink_to(tmp_path)
    os.mkfifo(out / "pipe")

    archive = archive_output(out)
    assert archive == archive_output(out)  # deterministic: the result hash is stable
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = sorted(tar.getnames())
        assert all(m.mtime == 0 for m in tar.getmembers())
    assert names == ["model", "model/weights.json"]
    assert b"private key" not in archive

    before = time.time() - 5
    files = extract_archive(archive, tmp_path / "result")
    assert [f.relative_to(tmp_path / "result").as_posix() for f in files] == ["model/weights.json"]
    assert files[0].stat().st_mtime > before  # not 1970-01-01
