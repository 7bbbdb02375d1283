"""Run a proxy or an agent as its own process (until ``datagora node --roles`` serves them).

    DATAGORA_PASSWORD=... python -m datagora.sharing.serve --role proxy --port 8601 \\
        --data DIR --rpc URL --deployment deployment.json --keys KEYS --account ADDRESS \\
        [--workers N]

A proxy with ``--workers N`` runs N processes on one port (uvicorn's supervisor
restarts one that dies). Re-encryption is CPU-bound and umbral-pre holds the GIL,
so one process uses one core; the workers share the key fragments and the nonce
store (SQLite), and the hash-chained access log (appends under ``flock``); the
one holding ``anchor.lock`` anchors it.

The account's keystore password is read from the environment variable named by
``--password-env`` (default ``DATAGORA_PASSWORD``), never from the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from datagora.crypto.keys import load_account
from datagora.errors import DatagoraError
from datagora.ledger import Ledger


def build(args: argparse.Namespace) -> FastAPI:
    password = os.environ.get(args.password_env)
    if not password:
        raise DatagoraError(f"set {args.password_env} to the keystore password of {args.account}")
    identity = load_account(args.keys, args.account, password)
    ledger = Ledger.connect(args.rpc, Path(args.deployment))
    if args.role == "proxy":
        from datagora.sharing.proxy import create_proxy_app

        return create_proxy_app(ledger, identity, Path(args.data), args.anchor_every)
    from datagora.sharing.agent import create_agent_app

    if not args.proxy:
        raise DatagoraError("an agent needs at least one --proxy URL")
    return create_agent_app(
        ledger, identity, args.proxy, args.threshold, Path(args.data), args.poll_interval
    )


_ARGV_ENV = "DATAGORA_SERVE_ARGV"


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY on every connection.

    Under ``--workers`` uvicorn binds the listening socket itself, with protocol
    number 0, so asyncio does not recognise accepted sockets as TCP and leaves
    Nagle's algorithm on: a response's body then waits for the client's delayed ACK
    of its headers, 40 ms per request (measured: 22 requests/s on one connection).
    """

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def worker_app() -> FastAPI:
    """The app of one worker process under ``--workers N`` (uvicorn imports it)."""
    return build(_parser().parse_args(json.loads(os.environ[_ARGV_ENV])))


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
    parser.add_argument("--threshold", type=int, default=1, help="agent: fragments needed")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="agent: seconds")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="proxy: processes serving the port (they share the fragments, nonces and "
        "access log; one anchors)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    import uvicorn

    if args.workers != 1:
        if args.role != "proxy" or not 1 <= args.workers <= 64:
            print("error: --workers is for proxies, 1 to 64", file=sys.stderr)
            return 2
        if not os.environ.get(args.password_env):
            print(f"error: set {args.password_env} to the keystore password", file=sys.stderr)
            return 2
        os.environ[_ARGV_ENV] = json.dumps(argv)
        uvicorn.run(
            "datagora.sharing.serve:worker_app",
            factory=True,
            workers=args.workers,
            http="datagora.sharing.serve:NoDelayHttpToolsProtocol",
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
        )
        return 0
    try:
        app = build(args)
    except DatagoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
