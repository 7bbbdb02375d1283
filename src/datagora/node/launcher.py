"""`datagora up`: a local datagora network of real processes on loopback.

One state directory holds everything that must survive a restart::

    DIR/chain-state.json   the chain's state, saved by `up` (atomically) at stop and every
                           few seconds while blocks are added
    DIR/deployment.json    the contracts, deployed once and reused while the chain has them
    DIR/ports.json         the port of every part, reused by the next `up` when still free
    DIR/password           the keystore password (generated once, mode 0600)
    DIR/owner-token        the compute node's owner token (generated once, mode 0600)
    DIR/keys/              keystores of anvil's development accounts (owner, researcher,
                           proxy1..m): public keys, so a local development network only
    DIR/nodes/<part>/      each node's data (shares, catalog database, agent and proxy state;
                           nodes/repair/: the owner's repair watcher's state)
    DIR/logs/<part>.log    each child's stdout and stderr (logs/repair.log: the watcher's)
    DIR/network.json       the network file the CLI and SDK read (chain, contracts, agent and
                           catalog; the storage nodes, proxies and compute node are found in
                           the NodeRegistry, where `up` registers them at start)
    DIR/supervisor.json    each part's restarts and state, for `datagora status`

`up` also runs the owner's storage-deal repair watcher
(:class:`datagora.market.repair_watch.RepairWatch`, as the owner development
account, in a thread of its own process; ``--no-repair-watch`` leaves it out): a
storage node in one of the owner's deals that leaves, is slashed or misses a
period has its shares moved onto another node, so the network heals by itself.

Every child runs in its own process group (and dies with its parent on Linux), so
stopping `up` in any way leaves no process behind.

Once the network is up, `up` supervises it: a node that exits is started again on
the same port with the same data directory after a back-off (0.5 s, doubling to
30 s, back to 0.5 s once it has stayed up for a minute), while the rest keep
serving. A node that dies 5 times within 60 s is reported in one line and left
down (the rest keep serving; `status` shows it).

The chain is restarted too, at once and with nothing acknowledged lost: `up` itself
answers JSON-RPC on the chain's port and journals every change before anvil (on an
internal port) sees it (DIR/chain-journal.jsonl, see :mod:`datagora.node.chainfront`);
a new anvil loads the last saved state and the journal after it is replayed before
any call is answered again (calls wait meanwhile). A chain that dies 5 times within
60 s still stops everything (exit 1). The next `up` also replays the journal, so a
killed `up` loses nothing either.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from datagora.atomic import write_atomically
from datagora.errors import ConfigError
from datagora.ledger import Chain, Deployment, Ledger, Role, dev_account
from datagora.ledger.anvil import find_anvil
from datagora.ledger.errors import ChainError
from datagora.ledger.jsonrpc import call as rpc
from datagora.node.chainfront import ChainFront
from datagora.node.errors import LaunchError, NodeExited
from datagora.node.network import (
    PROXIES,
    STARTING_TOKENS,
    STORAGE_NODES,
    THRESHOLD,
    Network,
    dev_grants,
)
from datagora.node.registration import STORAGE_ACCOUNT_BASE, DevNode, register_dev_nodes
from datagora.node.server import PRIVATE_METADATA_ENV, ROLES
from datagora.ports import free_port

__all__ = [
    "LaunchPlan",
    "Launcher",
    "Part",
    "ready_printer",
    "run_up",
    "save_delay",
]

STOP_GRACE = 15.0
"""Seconds a child gets to exit after SIGTERM before it is killed."""
CHAIN_GRACE = 30.0
"""Seconds anvil gets to exit after SIGTERM (its state is saved before)."""
SAVE_INTERVAL = 5.0
"""Seconds between checks whether the chain added blocks since its state was saved."""
SAVE_COST_FACTOR = 20.0
"""After a save that took t seconds the next waits at least this many times t: the
state holds every block and transaction (about 2 MB and 90 ms per 1,000
transactions, measured), so a busy chain is not dumped back to back."""
START_TIMEOUT = 240.0
"""A liveness deadline for every part to answer (a loaded 2-core machine is slow)."""
KEYSTORE_SCRYPT_N = 2**14
"""The keystores hold anvil's public development keys: a high scrypt cost protects nothing."""
OWNER, RESEARCHER = 1, 2
"""Development account indexes: 0 deploys (and mints), 1 owns data, 2 researches."""
FIRST_PROXY = 5
"""MarketTokens minted to the owner and the researcher when the contracts are deployed."""
MIN_ETH = 10 * 10**18
DEV_UNBONDING_DELAY = 300
"""Seconds a node leaving a development network's registry unbonds (7 days elsewhere)."""
REPAIR_EVERY = 2.0
"""Seconds between the repair watcher's rounds (the storage nodes prove every 2 s)."""
MAX_DEV_NODES = 16
"""Storage nodes (or proxies) an earlier `up` may have registered, looked for when a
smaller network starts."""
SECRET_FILES = ("password", "owner-token")
RESTART_FIRST = 0.5
"""Seconds before the first restart of a part that exited; doubled on each death."""
RESTART_MAX = 30.0
"""The longest back-off between restarts."""
STABLE_AFTER = 60.0
"""A part up this long before it dies restarts after RESTART_FIRST again."""
GIVE_UP_DEATHS = 5
GIVE_UP_WINDOW = 60.0
"""A part that dies GIVE_UP_DEATHS times within GIVE_UP_WINDOW seconds is left down."""
HAS_COMPUTE = "compute" in ROLES


@dataclass
class Part:
    """One child process of the network: its name, command, port and log."""

    name: str
    role: str
    port: int
    command: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    """How many times the supervisor started the part again."""
    started_at: float = 0.0
    deaths: deque[float] = field(default_factory=deque)
    backoff: float = 0.0
    restart_at: float | None = None
    """When a pending restart is due (monotonic), or None."""
    given_up: bool = False
    last_exit: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 3) -> str:
        """The last non-empty lines of the part's log, on one line."""
        try:
            text = self.log.read_bytes()[-8192:].decode(errors="replace")
        except OSError:
            return "(no log)"
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept) or "(empty log)"


@dataclass(frozen=True)
class LaunchPlan:
    """What `datagora up` starts."""

    state_dir: Path
    storage: int = STORAGE_NODES
    proxies: int = PROXIES
    threshold: int = THRESHOLD
    allow_weak_sandbox: bool = False
    repair_watch: bool = True

    def check(self) -> None:
        if self.storage < 1:
            raise ConfigError("--storage must be at least 1")
        if self.proxies < 1:
            raise ConfigError("--proxies must be at least 1")
        if not 1 <= self.threshold <= self.proxies:
            raise ConfigError(
                f"--threshold must be between 1 and --proxies ({self.proxies}), "
                f"got {self.threshold}"
            )

    def part_names(self) -> list[str]:
        names = ["chain"]
        names += [f"storage{i + 1}" for i in range(self.storage)]
        names += [f"proxy{i + 1}" for i in range(self.proxies)]
        names += ["agent"]
        # The compute role is optional in a node build; without it there is no compute part.
        if HAS_COMPUTE:
            names += ["compute"]
        names += ["catalog", "web"]
        return names


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _secret(path: Path) -> str:
    """The secret in `path`, generated (mode 0600) the first time."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        value = path.read_text().strip()
        if not value:
            raise ConfigError(f"{path} is empty: remove it only together with {path.parent}/keys")
        return value
    value = secrets.token_urlsafe(24)
    write_atomically(path, value + "\n", 0o600)
    return value


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # As the servers will: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def assign_ports(names: list[str], remembered: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """A port per part: the remembered one while free, else a new free one (and a note)."""
    ports: dict[str, int] = {}
    notes: list[str] = []
    for name in names:
        old = remembered.get(name)
        if isinstance(old, int) and 0 < old < 65536 and old not in ports.values():
            if _port_free(old):
                ports[name] = old
                continue
            notes.append(f"{name}: port {old} is taken, using a new one")
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
    return ports, notes


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


_LIBC = _libc()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: own process group, and SIGTERM when `up` itself dies.

    Only async-signal-safe work here (libc was loaded in the parent).
    """
    os.setsid()
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def save_delay(took: float) -> float:
    """Seconds until the next save of the chain's state after one that took `took`."""
    return max(SAVE_INTERVAL, SAVE_COST_FACTOR * took)


class Launcher:
    """Starts, watches and stops the parts of a local network.

    `stop_requested` is set by a signal handler (or a test); every wait checks it.
    """

    def __init__(self, plan: LaunchPlan, say: Callable[[str], None] = lambda _: None) -> None:
        plan.check()
        self.plan = plan
        self.dir = plan.state_dir.resolve()
        self.say = say
        self.parts: list[Part] = []
        self.stop_requested = threading.Event()
        self.network: Network | None = None
        self.redeployed = False
        self._lock_file: IO[str] | None = None
        self._chain_url: str | None = None
        self._front: ChainFront | None = None
        self._saved_block: int | None = None
        self._next_save_at = 0.0
        self._supervising = False
        self._repair: Any = None  # the RepairWatch, once started

    # -- paths ------------------------------------------------------------------------

    @property
    def network_file(self) -> Path:
        return self.dir / "network.json"

    @property
    def deployment_file(self) -> Path:
        return self.dir / "deployment.json"

    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys"

    # -- the whole run ------------------------------------------------------------------

    def start(self) -> Network:
        """Start every part and wait until each answers; the network file is written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / "nodes").mkdir(exist_ok=True)
        password = _secret(self.dir / "password")
        owner_token = _secret(self.dir / "owner-token")
        names = self.plan.part_names()
        ports_file = self.dir / "ports.json"
        ports, notes = assign_ports(names, _read_json(ports_file))
        for note in notes:
            self.say(note)
        write_atomically(ports_file, json.dumps(ports, indent=2, sort_keys=True) + "\n", 0o644)

        chain = self.start_chain(ports["chain"])
        chain_url = chain.url
        accounts = self._accounts(password)
        deployment = self._deployment(chain_url, accounts)
        self._fund(chain_url, accounts)
        delegation = self._agent_key(chain_url, password)
        self._save_chain_state(force=True)  # funding adds no block

        common = ["--rpc", chain_url, "--deployment", str(self.deployment_file)]
        env = {"DATAGORA_PASSWORD": password}
        storage_names = [n for n in names if n.startswith("storage")]
        known = [
            a for n in storage_names for a in ("--storage-node", f"http://127.0.0.1:{ports[n]}")
        ]
        # Each storage node acts as its registered account: it proves the deals
        # naming it each period and joins those that match what it holds.
        storage = [
            self._node(
                n, "storage", ports[n],
                [
                    *common, *known, "--public-url", f"http://127.0.0.1:{ports[n]}",
                    "--keys", str(self.keys_dir), "--account", n, "--accept-deals",
                    "--prove-every", "2",
                ],
                env,
            )
            for n in storage_names
        ]  # fmt: skip
        self._grant_dev_quotas(storage_names)
        proxies = [
            self._node(
                n, "proxy", ports[n],
                [*common, "--keys", str(self.keys_dir), "--account", n], env,
            )
            for n in names
            if n.startswith("proxy")
        ]  # fmt: skip
        first = [*storage, *proxies]
        compute: Part | None = None
        if HAS_COMPUTE:
            compute_args = [*common, "--keys", str(self.keys_dir), "--account", "owner"]
            # It reads the owner's published datasets from the storage nodes.
            compute_args += [a for s in storage for a in ("--storage-node", s.url)]
            if self.plan.allow_weak_sandbox:
                compute_args.append("--allow-weak-sandbox")
            compute = self._node(
                "compute", "compute", ports["compute"], compute_args,
                {**env, "DATAGORA_OWNER_TOKEN": owner_token},
            )  # fmt: skip
            first.append(compute)
        agent = self._node(
            "agent", "agent", ports["agent"],
            [
                *common, "--keys", str(self.keys_dir), "--account", "agent",
                "--delegation", str(delegation), "--threshold", str(self.plan.threshold),
                *[a for p in proxies for a in ("--proxy", p.url)],
            ],
            env,
        )  # fmt: skip
        catalog = self._node(
            "catalog", "catalog", ports["catalog"],
            [*common, *[a for s in storage for a in ("--storage-node", s.url)]],
            {PRIVATE_METADATA_ENV: "1"},  # the development network lives on loopback
        )  # fmt: skip

        # Every storage node, proxy and the compute node registers (funded and staked,
        # each with its own development account) before it starts: clients find them
        # in the NodeRegistry, so the network file lists none of them.
        self._register(chain_url, deployment, storage, proxies, compute)
        self._point_token_uri(chain_url, deployment, catalog.url)
        web_args = [*common, "--catalog", catalog.url, "--threshold", str(self.plan.threshold)]
        web_args += [a for p in proxies for a in ("--proxy", p.url)]
        web_args += [a for s in storage for a in ("--storage-node", s.url)]
        if compute is not None:
            web_args += ["--compute", compute.url]
        web = self._node("web", "web", ports["web"], web_args)

        self.network = Network(
            chain_url=chain_url,
            deployment=deployment,
            storage=[],
            proxies=[],
            threshold=self.plan.threshold,
            agent=agent.url,
            catalog=catalog.url,
            web=web.url,
            state_dir=str(self.dir),
        )
        self.network.save(self.network_file)

        # Proxies before the agent that delegates to them; storage before the catalog.
        for part in first:
            self._spawn(part)
        self._wait_healthy(first)
        for part in (agent, catalog):
            self._spawn(part)
        self._wait_healthy([agent, catalog])
        self._spawn(web)  # it reads the catalog
        self._wait_healthy([web])
        if self.plan.repair_watch:
            self._start_repair_watch(chain_url, deployment)
        return self.network

    def start_chain(self, port: int) -> Part:
        """anvil on the saved state behind the journaling front on `port`, the journal
        replayed (see the module's doc); answering when this returns."""
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self._check_chain_state()
        front = self._front = ChainFront(self.dir, port, self.say)
        front.listen()
        chain = self._spawn(self._chain_part(port, front.anvil_port))
        self._restore_chain(chain)
        self._chain_url = chain.url
        self._wait_healthy([chain])
        return chain

    def _lock(self) -> None:
        """One `up` per directory: a second would fight over the chain state and ports."""
        import fcntl

        self._lock_file = open(self.dir / "up.lock", "a+")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise LaunchError(
                f"another `datagora up` is running on {self.dir}: stop it first (Ctrl-C)"
            ) from None

    @property
    def supervisor_file(self) -> Path:
        return self.dir / "supervisor.json"

    def watch(self) -> None:
        """Block until a stop is requested (returns) or the chain exits
        (:class:`NodeExited`), restarting any other part that exits."""
        self._supervising = True
        self._write_supervisor()
        while not self.stop_requested.wait(0.5):
            self.tick()

    def tick(self) -> None:
        """One round of :meth:`watch`: :meth:`supervise`, then save the chain's state if
        a save is due."""
        self.supervise()
        if time.monotonic() >= self._next_save_at:
            self._save_chain_state()

    def supervise(self) -> None:
        """One round: note parts that exited, restart those whose back-off is over.

        Raises :class:`NodeExited` when the chain exited (see the module's doc)."""
        now = time.monotonic()
        changed = False
        for part in self.parts:
            if part.given_up or part.process is None:
                continue
            code = part.process.poll()
            if part.restart_at is None and code is not None:
                if part.role == "chain":
                    self._chain_died(part, code, now)
                    changed = True
                    continue
                self._died(part, code, now)
                changed = True
            elif part.restart_at is not None and now >= part.restart_at:
                part.restart_at = None
                part.restarts += 1
                self._start_process(part)
                changed = True
        if changed:
            self._write_supervisor()

    def _chain_died(self, part: Part, code: int, now: float) -> None:
        """Start anvil again at once on the saved state and replay the journal (see the
        module's doc); :class:`NodeExited` if that fails or it keeps dying."""
        assert part.process is not None and self._front is not None
        self._front.down()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(part.process.pid, signal.SIGKILL)
        part.last_exit = f"code {code}"
        while part.deaths and now - part.deaths[0] > GIVE_UP_WINDOW:
            part.deaths.popleft()
        part.deaths.append(now)
        if len(part.deaths) >= GIVE_UP_DEATHS:
            raise NodeExited(
                f"the chain died {len(part.deaths)} times within {GIVE_UP_WINDOW:.0f} s; "
                f"everything was stopped (run `up` again: it resumes from the saved state "
                f"and journal); last lines of {part.log}: {part.tail()}"
            )
        started = time.monotonic()
        part.restarts += 1
        part.command = self._chain_part(part.port, self._front.anvil_port).command
        self._start_process(part)
        replayed = self._restore_chain(part)
        self.say(
            f"the chain exited unexpectedly ({part.last_exit}); restarted on the saved state "
            f"and replayed {replayed} journaled changes in {time.monotonic() - started:.1f} s"
        )

    def _restore_chain(self, part: Part) -> int:
        assert part.process is not None and self._front is not None
        try:
            replayed = self._front.restore(part.process)
        except ChainError as exc:
            raise NodeExited(
                f"the chain could not be restored: {exc}; last lines of {part.log}: {part.tail()}"
            ) from None
        if replayed and part.restarts == 0:
            self.say(f"replayed {replayed} journaled chain changes made after the saved state")
        return replayed

    def _died(self, part: Part, code: int, now: float) -> None:
        assert part.process is not None
        # Whatever is left of its process group goes too, freeing the port.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(part.process.pid, signal.SIGKILL)
        part.last_exit = f"code {code}"
        while part.deaths and now - part.deaths[0] > GIVE_UP_WINDOW:
            part.deaths.popleft()
        part.deaths.append(now)
        if len(part.deaths) >= GIVE_UP_DEATHS:
            part.given_up = True
            self.say(
                f"{part.name} died {len(part.deaths)} times within {GIVE_UP_WINDOW:.0f} s: "
                f"left down (the rest keep serving); last lines of {part.log}: {part.tail()}"
            )
            return
        if now - part.started_at >= STABLE_AFTER or part.backoff == 0.0:
            part.backoff = RESTART_FIRST
        else:
            part.backoff = min(part.backoff * 2, RESTART_MAX)
        part.restart_at = now + part.backoff
        self.say(
            f"{part.name} exited unexpectedly ({part.last_exit}); restarting it in "
            f"{part.backoff:g} s on port {part.port}"
        )

    def _write_supervisor(self) -> None:
        """Each part's restarts and state, for `datagora status` (atomically)."""
        state = {
            p.name: {
                "restarts": p.restarts,
                "state": "down" if p.given_up
                else "restarting" if p.restart_at is not None
                else "running",
                "last_exit": p.last_exit or None,
                "pid": p.process.pid if p.process is not None else None,
            }
            for p in self.parts
        }  # fmt: skip
        with contextlib.suppress(OSError):
            write_atomically(
                self.supervisor_file,
                json.dumps({"up_pid": os.getpid(), "parts": state}, indent=2, sort_keys=True)
                + "\n",
                0o644,
            )

    # anvil's own state file (--state) is rewritten in place at SIGTERM and anvil may
    # exit before the write is done: half a file it then refuses to load, or none.
    # So anvil only loads the file; `up` asks anvil for its state over JSON-RPC and
    # writes it atomically. A copy kept by an earlier version is still used.
    @property
    def _state(self) -> Path:
        return self.dir / "chain-state.json"

    @property
    def _good_state(self) -> Path:
        return self.dir / "chain-state.good.json"

    def _save_chain_state(self, *, force: bool = False) -> None:
        """Write the chain's state to ``chain-state.json`` (with the journal position it
        covers) if it changed since the last save (always with `force`); a chain that
        cannot be read is reported."""
        if self._front is None:
            return
        started = time.monotonic()
        self._next_save_at = started + SAVE_INTERVAL
        try:
            block = self._front.checkpoint(None if force else self._saved_block)
        except (ChainError, OSError) as exc:
            self.say(f"could not save the chain's state: {exc}")
            return
        if block is None:
            return
        self._next_save_at = started + save_delay(time.monotonic() - started)
        self._saved_block = block
        # An earlier version's copy is older than this: never restore it over this one.
        self._good_state.unlink(missing_ok=True)

    def _check_chain_state(self) -> None:
        """Before anvil starts: a damaged state file (half-written by anvil itself, before
        `up` saved it) is replaced by the last complete copy if an earlier version
        kept one, and kept aside, never deleted."""
        if not self._state.exists():
            return
        try:
            json.loads(self._state.read_bytes())
        except ValueError:
            broken = self.dir / f"chain-state.broken-{int(time.time())}.json"
            os.replace(self._state, broken)
            if self._good_state.exists():
                os.replace(self._good_state, self._state)
                self.say(
                    f"the chain state was half-written (kept as {broken.name}); "
                    "restored the last complete copy"
                )
            else:
                self.say(f"the chain state was half-written (kept as {broken.name}); new chain")

    def stop(self) -> None:
        """Stop every part: the repair watcher and the nodes first, then the chain,
        whose state is saved once nothing else can change it."""
        if self._repair is not None:
            self._repair.close()
            self._repair = None
        nodes = [p for p in self.parts if p.role != "chain"]
        self._terminate(list(reversed(nodes)), STOP_GRACE)
        chain = [p for p in self.parts if p.role == "chain"]
        if any(p.running for p in chain):
            self._save_chain_state(force=True)
        self._terminate(chain, CHAIN_GRACE)
        if self._front is not None:
            self._front.close()
            self._front = None

    # -- parts --------------------------------------------------------------------------

    def _chain_part(self, port: int, anvil_port: int) -> Part:
        """The chain as a part: anvil on `anvil_port`, answered for on `port` by the
        front that journals every change (see the module's doc)."""
        command = [
            find_anvil(), "--host", "127.0.0.1", "--port", str(anvil_port),
            "--accounts", "10",
        ]  # fmt: skip
        if self._state.exists():
            command += ["--load-state", str(self._state)]
        return Part("chain", "chain", port, command, self.dir / "logs" / "chain.log")

    def _node(
        self, name: str, role: str, port: int, args: list[str], env: dict[str, str] | None = None
    ) -> Part:
        command = [
            sys.executable, "-m", "datagora", "node", "--roles", role,
            "--port", str(port), "--data", str(self.dir / "nodes" / name), *args,
        ]  # fmt: skip
        return Part(name, role, port, command, self.dir / "logs" / f"{name}.log", env or {})

    def _spawn(self, part: Part) -> Part:
        self._check_stop()
        self._start_process(part)
        self.parts.append(part)
        return part

    def _start_process(self, part: Part) -> None:
        """Start (or start again) the part's process, on its port, logging to its log."""
        env = {**os.environ, **part.env, "PYTHONUNBUFFERED": "1"}
        what = f"restarting (restart {part.restarts})" if part.restarts else "starting"
        part.started_at = time.monotonic()
        with open(part.log, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {what} {part.name}\n".encode())
            log.flush()
            part.process = subprocess.Popen(
                part.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # setsid + prctl only
            )

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise _Stopped

    def _check_alive(self) -> None:
        for part in self.parts:
            assert part.process is not None
            code = part.process.poll()
            if code is not None:
                raise NodeExited(
                    f"{part.name} exited unexpectedly (code {code}); everything was stopped; "
                    f"last lines of {part.log}: {part.tail()}"
                )

    def _healthy(self, part: Part) -> bool:
        try:
            if part.role == "chain":
                rpc(part.url, "eth_chainId", [], timeout=2.0)
                return True
            r = httpx.get(f"{part.url}/health", timeout=2.0, trust_env=False)
            return r.status_code == 200
        except (httpx.HTTPError, ChainError, ValueError):
            return False

    def _wait_healthy(self, parts: list[Part]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(parts)
        while waiting:
            self._check_stop()
            self._check_alive()
            waiting = [p for p in waiting if not self._healthy(p)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise LaunchError(
                    f"{names} did not answer /health within {START_TIMEOUT:.0f} s; "
                    f"see {self.dir / 'logs'}"
                )
            self.stop_requested.wait(0.2)

    def _terminate(self, parts: list[Part], grace: float) -> None:
        live = [p for p in parts if p.process is not None]
        for part in live:
            assert part.process is not None
            if part.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(part.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for part in live:
            assert part.process is not None
            try:
                part.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{part.name} did not stop within {grace:.0f} s: killed")
            # The leader is gone (or lingers): kill whatever is left of its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(part.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                part.process.wait(timeout=10)

    # -- chain set-up -------------------------------------------------------------------

    def _start_repair_watch(self, chain_url: str, deployment: Deployment) -> None:
        """The owner's repair watcher, in a thread, as the owner development account;
        one line per action in DIR/logs/repair.log and on `up`'s output."""
        from datagora.crypto.keys import Identity
        from datagora.market import Endpoints, Marketplace, discover
        from datagora.market.repair_watch import RepairWatch

        ledger = Ledger(Chain.rpc(chain_url), deployment)
        owner = Identity.from_private_key(bytes(dev_account(OWNER).key))
        market = Marketplace(ledger, discover(ledger, Endpoints(storage=[])), owner)
        log = self.dir / "logs" / "repair.log"

        def say(line: str) -> None:
            with log.open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
            self.say(f"repair: {line}")

        state = self.dir / "nodes" / "repair" / "watch.db"
        self._repair = RepairWatch(market, state, every=REPAIR_EVERY, say=say).start()

    def _grant_dev_quotas(self, names: list[str]) -> None:
        """Every development account may write to every storage node (its quota book,
        as `datagora node quota grant` would set it)."""
        from datagora.storage.auth import QuotaBook

        for name in names:
            book = QuotaBook.in_dir(self.dir / "nodes" / name / "storage")
            try:
                for account, amount in dev_grants().items():
                    book.grant(account, amount)
            finally:
                book.close()

    def _accounts(self, password: str) -> dict[str, str]:
        """Keystores for the owner, the researcher, each proxy and each storage node
        (created once)."""
        from datagora.crypto.keys import import_account, list_accounts

        wanted = {"owner": OWNER, "researcher": RESEARCHER}
        wanted |= {f"proxy{i + 1}": FIRST_PROXY + i for i in range(self.plan.proxies)}
        wanted |= {f"storage{i + 1}": STORAGE_ACCOUNT_BASE + i for i in range(self.plan.storage)}
        have = {a.name: a.address for a in list_accounts(self.keys_dir)}
        addresses: dict[str, str] = {}
        for name, index in wanted.items():
            account = dev_account(index)
            if name in have:
                if have[name].lower() != account.address.lower():
                    raise ConfigError(
                        f"{self.keys_dir}: account {name} is {have[name]}, not development "
                        f"account {index}: use another --dir"
                    )
            else:
                import_account(
                    self.keys_dir, account.key.hex(), password, name, scrypt_n=KEYSTORE_SCRYPT_N
                )
            addresses[name] = account.address
        return addresses

    def _agent_key(self, chain_url: str, password: str) -> Path:
        """The owner's agent key: a keystore of its own ("agent", random, made once),
        authorised on chain by the owner to delegate key fragments (and nothing
        else), and the owner's delegation keys sealed to it in DIR/agent-delegation.json.
        The agent never holds the owner's Ethereum key."""
        from datagora.crypto.keys import Identity, list_accounts, load_account, new_account

        have = {a.name for a in list_accounts(self.keys_dir)}
        if "agent" in have:
            agent = load_account(self.keys_dir, "agent", password)
        else:
            agent = new_account(self.keys_dir, password, "agent", scrypt_n=KEYSTORE_SCRYPT_N)
        owner = Identity.from_private_key(bytes(dev_account(OWNER).key))
        ledger = Ledger(Chain.rpc(chain_url), Deployment.load(self.deployment_file))
        if not ledger.access.is_delegate(owner.address, agent.address):
            ledger.access.set_delegate(owner.account, agent.address, True)
        path = self.dir / "agent-delegation.json"
        write_atomically(
            path,
            json.dumps(owner.delegation_keys().seal(agent.umbral_public_key), indent=2) + "\n",
            0o600,
        )
        return path

    def _deployment(self, chain_url: str, accounts: dict[str, str]) -> Deployment:
        """The deployment in DIR if the chain still has it; else deploy (and fund) anew."""
        chain = Chain.rpc(chain_url)
        if self.deployment_file.exists():
            try:
                return Ledger(chain, Deployment.load(self.deployment_file)).deployment
            except ConfigError as exc:
                self.say(f"redeploying: {exc}")
                self._set_aside_stale_state()
        self._check_stop()
        ledger = Ledger.deploy(chain, dev_account(0), unbonding_delay=DEV_UNBONDING_DELAY)
        ledger.deployment.save(self.deployment_file)
        self.redeployed = True
        for name in ("owner", "researcher"):
            ledger.market_token.mint(dev_account(0), accounts[name], STARTING_TOKENS)
        return ledger.deployment

    def _point_token_uri(self, chain_url: str, deployment: Deployment, catalog: str) -> None:
        """Point DataNFT.tokenURI at this network's catalog (`/nft/<id>` serves ERC-721
        metadata JSON), as `datagora chain base-uri` does on a real deployment; once per
        catalog URL (the deployer, development account 0, owns the collection)."""
        self._check_stop()
        ledger = Ledger(Chain.rpc(chain_url), deployment)
        url = catalog.rstrip("/") + "/nft/"
        if ledger.data_nft.base_uri() != url:
            ledger.data_nft.set_base_uri(dev_account(0), url)

    def _register(
        self,
        chain_url: str,
        deployment: Deployment,
        storage: list[Part],
        proxies: list[Part],
        compute: Part | None,
    ) -> None:
        """Register (or update) the network's nodes in the NodeRegistry: storage node i
        as development account STORAGE_ACCOUNT_BASE + i, each proxy as its own account
        (with its Umbral key), the compute node as the owner it computes for."""
        from datagora.crypto.keys import Identity

        self._check_stop()
        ledger = Ledger(Chain.rpc(chain_url), deployment)
        nodes = [
            DevNode(dev_account(STORAGE_ACCOUNT_BASE + i), Role.STORAGE, part.url)
            for i, part in enumerate(storage)
        ]
        for i, part in enumerate(proxies):
            account = dev_account(FIRST_PROXY + i)
            umbral_pk = Identity(account).umbral_public_key
            nodes.append(DevNode(account, Role.PROXY, part.url, umbral_pk))
        if compute is not None:
            nodes.append(DevNode(dev_account(OWNER), Role.COMPUTE, compute.url))
        register_dev_nodes(ledger, nodes)
        # Nodes an earlier `up` with more storage nodes or proxies registered would be
        # found by clients at a port nothing serves: they leave.
        ours = {n.account.address for n in nodes}
        stale = [n.address for n in ledger.registry.nodes() if n.address not in ours]
        if stale:
            former = [dev_account(STORAGE_ACCOUNT_BASE + i) for i in range(MAX_DEV_NODES)]
            former += [dev_account(FIRST_PROXY + i) for i in range(MAX_DEV_NODES)]
            for account in former:
                if account.address in stale:
                    ledger.registry.leave(account)
                    self.say(f"{account.address}: no longer in this network, left the registry")

    def _fund(self, chain_url: str, accounts: dict[str, str]) -> None:
        """Accounts past anvil's ten funded ones (many proxies) get ether for their anchors."""
        for address in accounts.values():
            if int(rpc(chain_url, "eth_getBalance", [address, "latest"]), 16) < MIN_ETH:
                rpc(chain_url, "anvil_setBalance", [address, hex(100 * 10**18)])

    def _set_aside_stale_state(self) -> None:
        """Node state indexed from a chain that is gone is moved aside, never deleted."""
        nodes = self.dir / "nodes"
        stale = self.dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
        for child in sorted(nodes.iterdir()) if nodes.is_dir() else []:
            if not child.name.startswith("storage"):
                stale.mkdir(exist_ok=True)
                child.rename(stale / child.name)
                self.say(f"moved {child} (state of the old chain) to {stale}")


class _Stopped(Exception):
    """A stop was requested while starting."""


@contextlib.contextmanager
def _stop_on_signals(launcher: Launcher) -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        launcher.stop_requested.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def run_up(
    plan: LaunchPlan,
    say: Callable[[str], None],
    ready: Callable[[Launcher, Network], None],
) -> None:
    """Start the network, call `ready`, stay until SIGINT/SIGTERM, then stop everything.

    Returns normally after a requested stop; raises :class:`NodeExited` (or another
    :class:`DatagoraError`) after stopping everything when a part fails.
    """
    launcher = Launcher(plan, say)
    with _stop_on_signals(launcher):
        try:
            network = launcher.start()
            ready(launcher, network)
            say(
                f"ready: {len(launcher.parts)} parts answer; a part that exits is restarted; "
                "Ctrl-C stops them all"
            )
            launcher.watch()
            say("stopping…")
        except _Stopped:
            say("stopping…")
        finally:
            launcher.stop()
            if launcher._supervising:
                launcher.supervisor_file.unlink(missing_ok=True)
            if launcher.parts:
                say("stopped: no part of the network is running (its state is kept)")


def ready_printer(console: Any, as_json: bool) -> Callable[[Launcher, Network], None]:
    """What `up` prints once every part answers: a table (or one JSON object) and notes."""

    def ready(launcher: Launcher, network: Network) -> None:
        parts = [
            {"part": p.name, "url": p.url, "pid": p.process.pid if p.process else None,
             "log": str(p.log)}
            for p in launcher.parts
        ]  # fmt: skip
        default = launcher.dir == (Path.cwd() / ".datagora").resolve()
        info = {
            "network_file": str(launcher.network_file),
            "chain_id": network.deployment.chain_id,
            "contracts": network.deployment.contracts,
            "deployed": launcher.redeployed,
            "threshold": network.threshold,
            "web": network.web,
            "keys": str(launcher.keys_dir),
            "accounts": ["owner", "researcher"],
            "parts": parts,
        }
        if as_json:
            sys.stdout.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
            sys.stdout.flush()
            return
        from rich.table import Table

        table = Table("part", "url", "pid", title="datagora local network")
        for p in parts:
            table.add_row(str(p["part"]), str(p["url"]), str(p["pid"]))
        console.print(table)
        console.print(f"logs: {launcher.dir / 'logs'}/<part>.log", highlight=False, soft_wrap=True)
        if network.web:
            console.print(f"marketplace in a browser: {network.web}/", highlight=False)
        deployed = "deployed now" if launcher.redeployed else "reused"
        console.print(
            f"contracts {deployed} on chain {network.deployment.chain_id}; "
            f"network file {launcher.network_file}"
            + ("" if default else f" (export DATAGORA_NETWORK={launcher.network_file})"),
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            "local development network: the accounts (owner, researcher, proxies) are anvil's "
            f"public development keys in {launcher.keys_dir}, their password is in "
            f"{launcher.dir / 'password'} (mode 0600); never use them on a real chain.",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            "try: datagora publish FILE --title T --price 1 --account owner; "
            "datagora status.  Ctrl-C stops everything (state is kept).",
            highlight=False,
            soft_wrap=True,
        )

    return ready
