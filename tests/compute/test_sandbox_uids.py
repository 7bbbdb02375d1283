"""Each running job has a uid of its own (a root node's jobs; a non-root node's jobs
run as 65534 in user namespaces of their own, and these tests are skipped).

The adversary is a consumer whose job runs beside another consumer's job on the same
node (two workers) or on another node of the machine. Sharing a uid, it could read the
other job's files in the weak mode, its clean-up killed the other job, and the two
shared one per-uid process limit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from datagora.compute.errors import SandboxUnavailable
from datagora.compute.sandbox import Isolation, Limits, Sandbox, bubblewrap_problem, claim_uid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a root node's jobs get uids")

LIMITS = Limits(cpu_s=10, wall_s=30, memory_bytes=1 << 30, processes=32, disk_bytes=16 << 20)

WHOAMI = """
import json, os, time
def run(inputs, params, output_dir):
    time.sleep(params["sleep"])
    (output_dir / "uid.json").write_text(json.dumps(os.getuid()))
"""

# In the weak mode: look for the other jobs' directories in the scratch folder and
# read their parameters (another consumer's), then end while the victim still runs.
SNOOP = """
import json, os, time
def run(inputs, params, output_dir):
    time.sleep(0.5)
    found = []
    for name in os.listdir(params["scratch"]):
        try:
            with open(os.path.join(params["scratch"], name, "in", "params.json")) as f:
                found.append(f.read())
        except OSError:
            pass
    (output_dir / "found.json").write_text(json.dumps(found))
"""

VICTIM = """
import time
def run(inputs, params, output_dir):
    time.sleep(2.5)
    (output_dir / "done.txt").write_text("done")
"""


def _concurrently(sandbox: Sandbox, jobs: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)

    def one(k: int) -> None:
        code, params = jobs[k]
        with sandbox.run(code.encode(), {}, params) as run:
            files = {p.name: p.read_text() for p in run.output_dir.iterdir()}
            results[k] = (run.ok, run.reason, run.uid, files)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_concurrent_jobs_in_bubblewrap_run_as_distinct_uids(tmp_path: Path) -> None:
    problem = bubblewrap_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the bubblewrap sandbox: {problem}")
        pytest.skip(problem)
    uids = range(62500, 62508)
    sandbox = Sandbox(LIMITS, scratch_dir=tmp_path, uids=uids)
    results = _concurrently(sandbox, [(WHOAMI, {"sleep": 1.0})] * 4)
    assert all(ok for ok, *_ in results), results
    seen = [json.loads(files["uid.json"]) for *_, files in results]
    assert seen == [uid for *_, uid, _ in results]  # what the job saw is what was claimed
    assert len(set(seen)) == 4 and set(seen) <= set(uids)


def test_a_weak_mode_job_cannot_read_or_kill_a_concurrent_job() -> None:
    # The weak mode has no filesystem isolation: only the uids keep two jobs apart.
    scratch = Path(tempfile.mkdtemp(prefix="datagora-uids-"))
    os.chmod(scratch, 0o755)  # the sandbox uid must reach it (and may list it)
    try:
        sandbox = Sandbox(LIMITS, allow_weak=True, scratch_dir=scratch, uids=range(62510, 62514))
        sandbox.isolation = Isolation.WEAK  # as on a machine without bubblewrap
        snoop, victim = _concurrently(
            sandbox,
            [(SNOOP, {"scratch": str(scratch)}), (VICTIM, {"secret": "VICTIM-PARAMS-5f2a"})],
        )
        assert snoop[0], snoop
        assert "VICTIM-PARAMS" not in snoop[3]["found.json"]
        assert victim[0] and victim[3] == {"done.txt": "done"}, victim  # not killed
        assert snoop[2] != victim[2]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_uid_claims_hold_across_processes_and_end_with_them(tmp_path: Path) -> None:
    uids = range(62520, 62522)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom datagora.compute.sandbox import claim_uid\n"
         f"with claim_uid(range({uids.start}, {uids.stop})) as uid:\n"
         "    print(uid, flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        held = int(holder.stdout.readline())
        with claim_uid(uids) as mine:
            assert mine != held and mine in uids
            with (
                pytest.raises(SandboxUnavailable, match="held by a running job"),
                claim_uid(uids),
            ):
                pass
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: the kernel dropped its claim.
    with claim_uid(uids) as first, claim_uid(uids) as second:
        assert {first, second} == set(uids)
