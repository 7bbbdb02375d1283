"""Run a proxy or an agent as its own process (until ``datagora node --roles`` serves them).

    DATAGORA_PASSWORD=... python -m datagora.sharing.serve --role proxy --port 8601 \\
        --data DIR --rpc URL --deployment deployment.json --keys KEYS --account ADDRESS \\
        [--workers N]

A proxy with ``--workers N`` runs N worker processes on one port under a small
supervisor (:func:`supervise`), which restarts a worker that dies (later each time
it dies soon after its start: :func:`restart_delay`) and stops them all on SIGTERM
or SIGINT. Re-encryption is CPU-bound and umbral-pre holds the GIL,
so one process uses one core; the workers share the key fragments (SQLite), the
nonce record file and the hash-chained access log (both appended under ``flock``);
the one holding ``anchor.lock`` anchors the log. Before starting them the
supervisor binds the port once without ``SO_REUSEPORT``, so a port that anything
else holds, another proxy's workers included, is refused instead of shared.

Each worker listens on its own socket bound with ``SO_REUSEPORT``, so the kernel
spreads connections over the workers by their address hash. With one shared
listening socket (uvicorn's ``--workers``) the first worker to wake accepts every
connection of a burst: 16 clients connecting at once all landed on one worker in
about half of the benchmark's runs, and the other core stayed idle.

The account's keystore password is read from the environment variable named by
``--password-env`` (default ``DATAGORA_PASSWORD``), never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Final

from fastapi import FastAPI

from datagora.crypto.keys import DelegationKeys, Identity, load_account
from datagora.errors import DatagoraError
from datagora.ledger import Ledger
from datagora.sharing.proxy import create_proxy_app, outermost

__all__ = [
    "build",
    "default_threshold",
    "load_delegation_keys",
    "main",
    "restart_delay",
    "supervise",
]

STARTUP_FAILURE: Final = 2
"""A worker's exit status when it could not start (bad keystore, port, app startup):
the supervisor gives up instead of restarting it into the same failure."""
_BACKLOG: Final = 2048
# No X-Forwarded-* rewriting: nothing here reads the client's address.
_UVICORN: Final[dict[str, Any]] = {
    "log_level": "warning",
    "access_log": False,
    "proxy_headers": False,
}
_STOP_TIMEOUT_S: Final = 30.0
_HEALTHY_S: Final = 10.0
"""A worker that lived this long before dying is restarted at once; one that died
sooner is restarted after a delay that doubles with each such death."""
_BACKOFF_FIRST_S: Final = 0.5
_BACKOFF_MAX_S: Final = 30.0


def build(args: argparse.Namespace) -> FastAPI:
    password = os.environ.get(args.password_env)
    if not password:
        raise DatagoraError(f"set {args.password_env} to the keystore password of {args.account}")
    identity = load_account(args.keys, args.account, password)
    ledger = Ledger.connect(args.rpc, Path(args.deployment))
    if args.role == "proxy":
        return create_proxy_app(ledger, identity, Path(args.data), args.anchor_every)
    from datagora.sharing.agent import create_agent_app

    if not args.proxy:
        raise DatagoraError("an agent needs at least one --proxy URL")
    keys = load_delegation_keys(Path(args.delegation), identity) if args.delegation else None
    threshold = default_threshold(len(args.proxy)) if args.threshold is None else args.threshold
    return create_agent_app(
        ledger, identity, args.proxy, threshold, Path(args.data), args.poll_interval, keys=keys
    )


def default_threshold(proxies: int) -> int:
    """2 with more than one proxy (1 would let any one proxy serve alone), else 1."""
    return 2 if proxies > 1 else 1


def load_delegation_keys(path: Path, agent: Identity) -> DelegationKeys:
    """The owner's delegation keys sealed to ``agent`` (``datagora account authorize-agent``)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatagoraError(f"cannot read the delegation keys {path}: {exc}") from None
    return DelegationKeys.open(record, agent)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datagora.sharing.serve")
    parser.add_argument("--role", choices=("proxy", "agent"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="this node's data directory")
    parser.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    parser.add_argument("--deployment", required=True, help="deployment record (JSON)")
    parser.add_argument("--keys", required=True, help="keystore directory")
    parser.add_argument("--account", required=True, help="address or name of the account")
    parser.add_argument("--password-env", default="DATAGORA_PASSWORD")
    parser.add_argument("--anchor-every", type=float, default=60.0, help="proxy: seconds")
    parser.add_argument("--proxy", action="append", default=[], help="agent: proxy URL (repeat)")
    parser.add_argument(
        "--threshold", type=int, default=None, help="agent: fragments needed (default 2 of >1)"
    )
    parser.add_argument(
        "--delegation",
        default=None,
        help="agent: the owner's delegation keys sealed to --account (an authorised agent key)",
    )
    parser.add_argument("--poll-interval", type=float, default=1.0, help="agent: seconds")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="proxy: processes serving the port (they share the fragments, nonces and "
        "access log; one anchors)",
    )
    # Internal: a worker under the supervisor listens on a SO_REUSEPORT socket.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    return parser


def _bind(host: str, port: int, *, listen: bool, reuse_port: bool = True) -> socket.socket:
    """A TCP socket on ``host:port``, in the port's SO_REUSEPORT group unless
    ``reuse_port`` is false (OSError if the port is taken)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets it knows are TCP
    # (with Nagle on, each answer's body waited 40 ms for the client's delayed ACK).
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _serve_worker(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        sock = _bind(args.host, args.port, listen=True)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return STARTUP_FAILURE
    try:
        app = build(args)
    except DatagoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    server = uvicorn.Server(uvicorn.Config(outermost(app), **_UVICORN))
    supervisor = os.getppid()

    def orphaned() -> None:  # the supervisor was killed: stop serving, do not linger
        while not server.should_exit:
            if os.getppid() != supervisor:
                server.should_exit = True
            time.sleep(1.0)

    threading.Thread(target=orphaned, name="supervisor-watch", daemon=True).start()
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def supervise(argv: list[str], workers: int, host: str, port: int) -> int:
    """Run ``workers`` worker processes of ``argv`` (without ``--workers``) on one port
    until SIGTERM or SIGINT; a worker that dies is restarted, one that cannot start
    stops them all. Returns the exit status."""
    try:
        # Without SO_REUSEPORT first: any other holder of the port (even another proxy
        # in its own SO_REUSEPORT group, which this one would silently join) fails here.
        _bind(host, port, listen=False, reuse_port=False).close()
        # Held, never listened on: the port stays this proxy's while a worker restarts.
        reserved = _bind(host, port, listen=False)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return STARTUP_FAILURE
    command = [sys.executable, "-m", "datagora.sharing.serve", *argv, "--reuse-port"]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[subprocess.Popen[bytes]] = []
    started: list[float] = []
    quick_deaths = [0] * workers
    due: list[float | None] = [None] * workers  # when a dead worker is to be restarted
    status = 0
    try:
        children = [subprocess.Popen(command) for _ in range(workers)]
        started = [time.monotonic()] * workers
        while not stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for i, child in enumerate(children):
                if stopping:
                    break
                restart_at = due[i]
                if restart_at is not None:
                    if now >= restart_at:
                        children[i], started[i], due[i] = subprocess.Popen(command), now, None
                    continue
                code = child.poll()
                if code is None:
                    continue
                if code == STARTUP_FAILURE:
                    # It said why on stderr; restarting would fail the same way.
                    print(f"error: a worker could not start (exit {code})", file=sys.stderr)
                    stopping, status = True, STARTUP_FAILURE
                    break
                quick_deaths[i] = quick_deaths[i] + 1 if now - started[i] < _HEALTHY_S else 0
                delay = restart_delay(quick_deaths[i])
                print(f"warning: worker {child.pid} died (exit {code}); restarting it in "
                      f"{delay:.1f} s", file=sys.stderr)  # fmt: skip
                due[i] = now + delay
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def restart_delay(quick_deaths: int) -> float:
    """Seconds to wait before restarting a worker that died ``quick_deaths`` times in
    a row, each within :data:`_HEALTHY_S` of its start: none after a worker that had
    been healthy, then 0.5 s doubling to at most 30 s, so a worker that crashes on
    every request or at once after start does not spin the supervisor."""
    if quick_deaths <= 0:
        return 0.0
    return min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2.0 ** min(quick_deaths - 1, 16))


def _without_workers(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.reuse_port:
        return _serve_worker(args)
    if args.workers != 1:
        if args.role != "proxy" or not 1 <= args.workers <= 64:
            print("error: --workers is for proxies, 1 to 64", file=sys.stderr)
            return 2
        if not os.environ.get(args.password_env):
            print(f"error: set {args.password_env} to the keystore password", file=sys.stderr)
            return 2
        return supervise(_without_workers(argv), args.workers, args.host, args.port)
    import uvicorn

    try:
        app = build(args)
    except DatagoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(outermost(app), host=args.host, port=args.port, **_UVICORN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
