"""`datagora node` passes the job caps to the compute node (--max-jobs-per-dataset,
--max-jobs-per-consumer), and refuses a cap below 1 in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compute_helpers import identity

from datagora.crypto.keys import Identity
from datagora.ledger import Ledger
from datagora.node.server import NodeConfig, _role_app
from helpers import OWNER


@dataclass
class _Embedded(NodeConfig):
    """A node configuration whose chain is the in-process embedded one (no RPC)."""

    chain: Ledger | None = None

    def ledger(self) -> Ledger:
        assert self.chain is not None
        return self.chain

    def identity(self) -> Identity:
        return identity(OWNER)


def test_the_node_passes_the_job_caps_to_the_compute_node(
    embedded_ledger: Ledger, tmp_path: Path
) -> None:
    config = _Embedded(
        data_dir=tmp_path,
        allow_weak_sandbox=True,
        max_jobs_per_dataset=3,
        max_jobs_per_consumer=2,
        chain=embedded_ledger,
    )
    jobs = _role_app("compute", config).state.jobs
    try:
        assert (jobs.max_jobs_per_dataset, jobs.max_jobs_per_consumer) == (3, 2)
    finally:
        jobs.close()
    # Not given: the compute node's defaults.
    plain = _Embedded(data_dir=tmp_path / "d", allow_weak_sandbox=True, chain=embedded_ledger)
    default = _role_app("compute", plain).state.jobs
    try:
        assert (default.max_jobs_per_dataset, default.max_jobs_per_consumer) == (32, 16)
    finally:
        default.close()


def test_a_job_cap_below_one_is_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for flag in ("--max-jobs-per-dataset", "--max-jobs-per-consumer"):
        done = subprocess.run(
            [sys.executable, "-m", "datagora", "node", "--roles", "compute", "--port", "7999",
             "--data", str(tmp_path / "node"), flag, "0"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and flag in lines[0] and "at least 1" in lines[0], done.stderr
        assert not (tmp_path / "node").exists()
