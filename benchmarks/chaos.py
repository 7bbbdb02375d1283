"""`datagora bench chaos`: the local network of real processes under faults.

``run`` starts what ``datagora up`` starts (anvil behind `up`'s journaling front, six
storage nodes, three proxies, the agent, the compute node, the catalog: real processes
on loopback, supervised as ``up`` supervises them, the chain's state saved as often)
and, while an owner publishes and repairs and a researcher buys, downloads and runs
compute jobs (paid one by one through the ComputeRegistry's escrow, approved by the
owner when they wait for review) in a bounded loop, a second thread injects faults
at random moments:

* ``kill``: SIGKILL a storage node, a proxy, the agent, the compute node, the
  catalog or the chain (anvil's whole process group; the supervisor restarts it,
  the chain on its last saved state with the journal replayed; the time until it
  answers again is one recovery sample);
* ``stall``: SIGSTOP a storage node or a proxy for 0.5-2 s, then SIGCONT;
* ``corrupt``: overwrite bytes in the middle of a storage node's pack segment (the
  shares it holds there no longer match their hashes);
* ``full`` (as root only): the last storage node's data directory is a 24 MiB
  tmpfs, so it fills up while the owner keeps publishing.

A part is never killed more than twice a minute (five deaths a minute would make
the supervisor give it up, which `up` reports: that is tested elsewhere), and at
most ``n - k`` storage nodes and ``m - t`` proxies are down or stalled at once, so
what the network promises (4-of-6 shares, 2-of-3 proxies) is what is tested.

Every operation either succeeds and is checked, or fails with a
:class:`~datagora.errors.DatagoraError` (a clean failure: one line for a user);
anything else is counted in ``operations_failed_uncleanly`` with its first
messages. At the end, once every part answers again, each acknowledged dataset is
repaired and downloaded: ``data_lost`` counts those that do not come back
byte-identical, and ``wrong_bytes`` any download during the run that returned
other bytes than published (never acceptable, faults or not). ``duplicates``
counts payments beyond the buys attempted (a buy charged twice, read from the
researcher's balance), escrows paid beyond the jobs submitted or twice for one job,
and jobs that ran twice (a job acknowledged once whose result on chain changed, or
more jobs on chain than submitted). ``catalog_missing`` counts acknowledged datasets the catalog
has not indexed 60 s after the run.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from datagora.errors import DatagoraError
from datagora.ledger.compute import EscrowState
from datagora.ledger.errors import ChainError
from datagora.ledger.jsonrpc import call as rpc
from datagora.node.launcher import Launcher, LaunchPlan, Part

PRICE = 10**17
JOB_PRICE = 10**16
FULL_DISK_MB = 24
ALGORITHM = """
import json


def run(inputs, params, output_dir):
    (item,) = inputs.values()
    rows = len(item.frame)
    (output_dir / "count.json").write_text(json.dumps({"rows": rows}))
"""


@dataclass
class _Tally:
    operations: int = 0
    succeeded: int = 0
    failed_cleanly: int = 0
    failed_uncleanly: int = 0
    unclean: list[str] = field(default_factory=list)
    clean: list[str] = field(default_factory=list)
    wrong_bytes: int = 0
    buys_attempted: int = 0
    jobs_submitted: int = 0
    """Jobs whose submission was attempted (each may have locked an escrow)."""
    jobs_done: dict[int, bytes] = field(default_factory=dict)
    """Jobs acknowledged as succeeded -> the result hash on chain then."""
    compute_dataset: int | None = None
    faults: dict[str, int] = field(default_factory=dict)
    recovery: list[float] = field(default_factory=list)
    chain_recovery: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1


def _csv(rng: random.Random, rows: int) -> bytes:
    lines = ["id,a,b,label"]
    lines += [
        f"{i},{rng.random():.6f},{rng.randint(0, 10**6)},{rng.randint(0, 1)}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def _healthy(part: Part) -> bool:
    if part.role == "chain":
        try:
            rpc(part.url, "eth_chainId", [], timeout=1.0)
        except (httpx.HTTPError, ChainError, ValueError):
            return False
        return True
    try:
        r = httpx.get(f"{part.url}/health", timeout=1.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


class _Faults(threading.Thread):
    """Injects `count` faults at random moments, one at a time."""

    def __init__(
        self,
        launcher: Launcher,
        tally: _Tally,
        rng: random.Random,
        count: int,
        gap: tuple[float, float],
    ) -> None:
        super().__init__(daemon=True, name="chaos-faults")
        self.launcher, self.tally, self.rng, self.count, self.gap = (
            launcher, tally, rng, count, gap,
        )  # fmt: skip
        self.done = threading.Event()
        self.stop = threading.Event()
        self.kills: dict[str, list[float]] = {}
        self.down: dict[str, float] = {}
        """Killed parts not yet answering again: name -> when killed."""
        self.stalled: set[str] = set()
        self.errors: list[str] = []

    def _parts(self, role: str) -> list[Part]:
        return [p for p in self.launcher.parts if p.role == role]

    def _out(self, role: str) -> int:
        names = {p.name for p in self._parts(role)}
        return len(names & (set(self.down) | self.stalled))

    def _budget(self, role: str) -> int:
        # What the network tolerates: n - k storage nodes, m - t proxies, the others one.
        plan = self.launcher.plan
        if role == "storage":
            return max(plan.storage - 4, 0)
        if role == "proxy":
            return max(plan.proxies - plan.threshold, 0)
        return 1

    def _candidates(self, now: float) -> list[Part]:
        out = []
        for part in self.launcher.parts:
            if part.name in self.down or part.name in self.stalled:
                continue
            if not part.running or part.given_up:
                continue
            recent = [t for t in self.kills.get(part.name, []) if now - t < 60]
            if len(recent) >= 2 or self._out(part.role) >= self._budget(part.role):
                continue
            out.append(part)
        return out

    def _watch_recoveries(self) -> None:
        for name, since in list(self.down.items()):
            part = next(p for p in self.launcher.parts if p.name == name)
            if part.running and _healthy(part):
                self.tally.recovery.append(time.monotonic() - since)
                if part.role == "chain":
                    self.tally.chain_recovery.append(round(time.monotonic() - since, 2))
                del self.down[name]

    def run(self) -> None:
        try:
            injected = 0
            while injected < self.count and not self.stop.is_set():
                self.stop.wait(self.rng.uniform(*self.gap))
                self._watch_recoveries()
                # Once half the faults are in, the chain is killed if it was not yet.
                chain_due = injected >= self.count // 2 and "chain" not in self.kills
                if self._inject(time.monotonic(), chain_due):
                    injected += 1
            deadline = time.monotonic() + 120
            while self.down and time.monotonic() < deadline:
                time.sleep(0.2)
                self._watch_recoveries()
        except Exception as exc:  # reported in the result, never silently lost
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.done.set()

    def _inject(self, now: float, chain_due: bool = False) -> bool:
        parts = self._candidates(now)
        if not parts:
            return False
        part = self.rng.choice(parts)
        kind = self.rng.choice(["kill", "kill", "stall", "corrupt"])
        chain = [p for p in parts if p.role == "chain"]
        if chain_due and chain:
            part, kind = chain[0], "kill"
        if kind == "corrupt" and part.role != "storage":
            kind = "kill"
        if kind == "stall" and part.role not in ("storage", "proxy"):
            kind = "kill"
        proc = part.process
        if proc is None:
            return False
        if kind == "kill":
            with contextlib.suppress(ProcessLookupError):
                if part.role == "chain":  # the npm launcher script and anvil itself
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
            self.kills.setdefault(part.name, []).append(now)
            self.down[part.name] = now
        elif kind == "stall":
            self.stalled.add(part.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGSTOP)
            pause = self.rng.uniform(0.5, 2.0)

            def resume(pid: int = proc.pid, name: str = part.name) -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                self.stalled.discard(name)

            threading.Timer(pause, resume).start()
        else:
            if not self._corrupt(part):
                return False
        self.tally.fault(kind)
        return True

    def _corrupt(self, part: Part) -> bool:
        folder = self.launcher.dir / "nodes" / part.name
        segments = [p for p in folder.rglob("*.pack") if p.stat().st_size > 4096]
        if not segments:
            return False
        segment = self.rng.choice(segments)
        size = segment.stat().st_size
        offset = self.rng.randrange(0, size - 64)
        with open(segment, "r+b") as f:
            f.seek(offset)
            f.write(os.urandom(64))
        return True


def _mount_small_disk(folder: Path) -> bool:
    """Make `folder` a small tmpfs when root (the `full` fault); False otherwise."""
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FULL_DISK_MB}m", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


def run(faults: int = 200, seed: int = 1, rows: int = 400, gap: float = 1.0) -> dict[str, Any]:
    """Run the chaos loop until `faults` faults were injected; see the module's doc."""
    from datagora.sdk import connect

    rng = random.Random(seed)
    tally = _Tally()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="datagora-chaos-") as tmp:
        state = Path(tmp) / "net"
        plan = LaunchPlan(state)
        small_disk = state / "nodes" / f"storage{plan.storage}"
        full_disk = _mount_small_disk(small_disk)
        launcher = Launcher(plan)
        supervising = threading.Event()
        supervisor_errors: list[str] = []

        def supervise() -> None:
            while not supervising.wait(0.1):
                try:
                    launcher.tick()  # as `up` does, saving the chain's state when due
                except Exception as exc:  # the chain could not come back: the run ends
                    supervisor_errors.append(str(exc))
                    return

        try:
            launcher.start()
            password = (state / "password").read_text().strip()
            keys = state / "keys"
            owner = connect(launcher.network_file, "owner", keys, password)
            researcher = connect(launcher.network_file, "researcher", keys, password)
            balance_before = researcher.ledger.market_token.balance_of(
                researcher.identity.account.address
            )
            watcher = threading.Thread(target=supervise, daemon=True)
            watcher.start()
            injector = _Faults(launcher, tally, rng, faults, (gap * 0.3, gap * 1.7))
            injector.start()
            published: dict[int, bytes] = {}
            while not injector.done.is_set() and not supervisor_errors:
                _operation(rng, owner, researcher, published, tally, rows)
            injector.stop.set()
            injector.join(150)
            supervising.set()
            watcher.join(5)
            run_s = time.monotonic() - started

            # Every part answers again (the supervisor restarted the dead ones).
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                launcher.supervise()
                if all(_healthy(p) for p in launcher.parts):
                    break
                time.sleep(0.3)
            not_back = [p.name for p in launcher.parts if not _healthy(p)]
            data_lost = _final_check(owner, researcher, published)
            data_lost += _jobs_changed(researcher, tally)
            catalog_missing = _catalog_missing(owner, published)
            spent = balance_before - researcher.ledger.market_token.balance_of(
                researcher.identity.account.address
            )
            escrows = _escrows(researcher)
            restarts = {p.name: p.restarts for p in launcher.parts if p.restarts}
        finally:
            supervising.set()
            launcher.stop()
            if full_disk:
                subprocess.run(["umount", "-l", str(small_disk)], capture_output=True)
    recovery = sorted(tally.recovery)
    p95 = recovery[min(len(recovery) - 1, int(0.95 * len(recovery)))] if recovery else None
    paid_jobs = [e.job for e in escrows if e.state == EscrowState.PAID]
    held = sum(e.amount for e in escrows if e.state != EscrowState.REFUNDED)
    charged = (spent - held) // PRICE
    jobs_on_chain = escrows_jobs = len({e.job for e in escrows if e.job})
    job_duplicates = (len(paid_jobs) - len(set(paid_jobs))) + max(
        0, len(paid_jobs) - tally.jobs_submitted
    )
    return {
        "faults_injected": sum(tally.faults.values()),
        "faults_by_kind": dict(sorted(tally.faults.items())),
        "full_disk_node": full_disk,
        "operations": tally.operations,
        "operations_succeeded": tally.succeeded,
        "operations_failed_cleanly": tally.failed_cleanly,
        "operations_failed_uncleanly": tally.failed_uncleanly,
        "unclean_examples": tally.unclean[:5],
        "clean_failure_examples": sorted(set(tally.clean))[:8],
        "datasets_published": len(published),
        "data_lost": data_lost,
        "wrong_bytes": tally.wrong_bytes,
        "buys_attempted": tally.buys_attempted,
        "buys_charged": charged,
        "jobs_submitted": tally.jobs_submitted,
        "jobs_succeeded": len(tally.jobs_done),
        "jobs_paid": len(paid_jobs),
        "jobs_on_chain": jobs_on_chain,
        "duplicates": max(0, charged - tally.buys_attempted)
        + job_duplicates
        + max(0, escrows_jobs - tally.jobs_submitted),
        "catalog_missing": catalog_missing,
        "recovery_s_p50": round(statistics.median(recovery), 2) if recovery else None,
        "recovery_s_p95": round(p95, 2) if p95 is not None else None,
        "chain_recovery_s": tally.chain_recovery,
        "restarts": restarts,
        "parts_not_back": not_back,
        "kills_not_recovered": sorted(injector.down),
        "injector_errors": injector.errors,
        "chain_died": supervisor_errors[:1],
        "run_s": round(run_s, 1),
    }


def _operation(
    rng: random.Random,
    owner: Any,
    researcher: Any,
    published: dict[int, bytes],
    tally: _Tally,
    rows: int,
) -> None:
    kind = rng.choice(["publish", "buy", "buy", "repair", "compute"]) if published else "publish"
    tally.operations += 1
    try:
        if kind == "publish":
            data = _csv(rng, rows)
            meta = {
                "title": f"chaos {len(published) + 1}",
                "license": "CC0-1.0",
                "creator": "chaos bench",
                "tags": ["chaos"],
            }
            done = owner.publish(io.BytesIO(data), meta, price=PRICE)
            published[done.dataset] = data
        elif kind == "buy":
            dataset = rng.choice(sorted(published))
            tally.buys_attempted += 1
            researcher.buy_and_order(dataset, 0, PRICE)
            got = researcher.read_bytes(dataset)
            if got != published[dataset]:
                tally.wrong_bytes += 1
        elif kind == "compute":
            _compute(owner, researcher, published, tally)
        else:
            _repair(owner, rng.choice(sorted(published)))
        tally.succeeded += 1
    except DatagoraError as exc:
        tally.failed_cleanly += 1
        if len(tally.clean) < 50:
            tally.clean.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")
        time.sleep(0.2)  # a client would wait before trying again
    except Exception as exc:
        tally.failed_uncleanly += 1
        tally.unclean.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")


def _compute(owner: Any, researcher: Any, published: dict[int, bytes], tally: _Tally) -> None:
    """Submit a job paid through the escrow on the compute dataset (offered and priced
    the first time), approve it if it waits for review, and read its result."""
    if tally.compute_dataset is None:
        dataset = min(published)
        owner.offer_compute(dataset, [ALGORITHM])
        owner.price_jobs(dataset, JOB_PRICE)
        tally.compute_dataset = dataset
    tally.jobs_submitted += 1
    job = researcher.compute(tally.compute_dataset, ALGORITHM, {}, max_price=JOB_PRICE)
    status = job.wait(120)
    if status["state"] == "pending":
        owner.approve_job(job.job)
        status = job.wait(120, through_review=True)
    if status["state"] != "succeeded":
        raise DatagoraError(f"job {job.job} ended {status['state']}: {status.get('reason')}")
    job.result()  # checked against the result hash on chain
    tally.jobs_done[job.job] = researcher.ledger.compute.job(job.job).result


def _jobs_changed(researcher: Any, tally: _Tally) -> int:
    """Acknowledged jobs whose result on chain is not the one acknowledged (run again)."""
    return sum(
        1 for job, result in tally.jobs_done.items()
        if researcher.ledger.compute.job(job).result != result
    )  # fmt: skip


def _escrows(researcher: Any) -> list[Any]:
    compute = researcher.ledger.compute
    me = researcher.identity.account.address.lower()
    found = [compute.escrow(i) for i in range(1, compute.escrow_count() + 1)]
    return [e for e in found if e.consumer.lower() == me]


def _final_check(owner: Any, researcher: Any, published: dict[int, bytes]) -> int:
    lost = 0
    for dataset, data in published.items():
        with contextlib.suppress(Exception):  # the download below decides
            _repair(owner, dataset)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / "copy"
                owner.owner_download(owner.dataset_info(dataset).manifest_hash, copy)
                if copy.read_bytes() != data:
                    lost += 1
        except Exception:
            lost += 1
    return lost


def _repair(owner: Any, dataset: int) -> None:
    from datagora.storage.repair import Repairer

    repairer = Repairer(owner.endpoints.storage, signer=owner.identity.account)
    repairer.repair(owner.dataset_info(dataset).manifest_hash)


def _catalog_missing(owner: Any, published: dict[int, bytes]) -> int:
    deadline = time.monotonic() + 60
    missing = set(published)
    while missing and time.monotonic() < deadline:
        found: set[int] = set()
        with contextlib.suppress(DatagoraError):
            for offset in range(0, len(published), 100):
                items = owner.search("", tag="chaos", limit=100, offset=offset)
                found |= {int(item["id"]) for item in items}
        missing -= found
        if missing:
            time.sleep(1)
    return len(missing)
