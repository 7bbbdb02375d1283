"""A write-ahead journal in front of anvil, so that `up` can restart a killed chain
with nothing acknowledged lost.

anvil keeps its state in memory; `up` saves it every few seconds
(``anvil_dumpState``). A new anvil started on that file has lost every transaction
since, which clients were already told had been taken. So `up` answers JSON-RPC on
the chain's advertised port itself and forwards to anvil on an internal port:

* every call that changes the chain (``eth_sendRawTransaction``,
  ``eth_sendTransaction``, ``anvil_*``, ``evm_*``, ``hardhat_*`` except a few read-only
  ones; a batch holding one) is appended to ``chain-journal.jsonl`` and fsynced
  *before* it is forwarded, and forwarded one at a time, so the journal's order is
  the chain's order; once answered, the block it ended at (number and timestamp) is
  noted beside it;
* a save of the state (:meth:`ChainFront.checkpoint`) holds the same lock, writes the
  journal position it covers into the state file itself (one atomic rename: the
  state and its position cannot disagree) and then empties the journal;
* when anvil dies, :meth:`ChainFront.restore` (called by the supervisor once a new
  anvil runs on the last saved state) replays every journal entry after that
  position in order, each mined block with the timestamp it had (so rules that
  depend on time decide as they did), sets the clock back to where it was, and
  only then serves again. Replayed raw transactions keep their hashes, so their
  receipts reappear; block hashes may change (the catalog's indexer treats that
  as a reorganisation).

Calls arriving while anvil is down wait (up to :data:`WAIT`) instead of failing; a
change that was journaled but whose answer was lost with anvil is answered with
the result of its replay, so it is applied exactly once. A change forwarded to an
anvil that is alive but does not answer in time has an unknown outcome: the front
kills that anvil, and the replay decides it.

What is not kept: ``evm_snapshot`` ids (anvil does not save them; a revert to one
taken before a restart fails), and transactions anvil holds in its pool unmined
(a nonce gap) when `up` stops: periodic saves wait until the pool is empty, since a
save does not hold them and the journal before it is dropped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from datagora.atomic import write_atomically
from datagora.ledger.anvil import dump_state
from datagora.ledger.errors import ChainError
from datagora.ports import free_port

__all__ = ["POSITION_KEY", "ChainFront", "Journal", "is_change"]

POSITION_KEY = "datagora_journal_position"
"""The key `up` adds to anvil's state file: the first journal entry it does not hold."""
OFFSET_KEY = "datagora_clock_offset"
"""Also in the state file: the chain's clock minus the wall clock when it was saved."""
WAIT = 90.0
"""Seconds a call waits for a restarting chain before it is answered with an error."""
CHANGE_TIMEOUT = 60.0
"""Seconds anvil gets to answer a change before the front restarts it (see above)."""
MAX_BODY = 64 * 2**20
READ_ONLY = frozenset(
    {
        "anvil_nodeInfo",
        "anvil_metadata",
        "anvil_dumpState",
        "anvil_getAutomine",
        "anvil_getIntervalMining",
        "evm_snapshot",  # ids are not kept across restarts anyway
    }
)
CHANGE_PREFIXES = ("anvil_", "evm_", "hardhat_")
CHANGES = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})


def is_change(request: Any) -> bool:
    """Whether a JSON-RPC request (or batch) may change the chain."""
    if isinstance(request, list):
        return any(is_change(r) for r in request)
    if not isinstance(request, dict):
        return False
    method = request.get("method")
    if not isinstance(method, str):
        return False
    return method in CHANGES or (method.startswith(CHANGE_PREFIXES) and method not in READ_ONLY)


@dataclass
class Entry:
    """One journaled change and, once answered, the block the chain was at after it."""

    seq: int
    body: bytes
    block: int | None = None
    timestamp: int | None = None
    wall: float | None = None
    """The wall clock when it was answered (the chain's clock offset is timestamp - wall)."""


class Journal:
    """``chain-journal.jsonl``: one JSON line per change (``{"seq", "request"}``),
    fsynced before the change is forwarded, and one per answer (``{"ack", "block",
    "timestamp"}``, flushed with the next fsync). A torn last line (`up` killed
    while writing it) is dropped when the journal is opened: that change was never
    forwarded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "ab+")  # noqa: SIM115 - held while `up` runs
        self._file.seek(0)
        data = self._file.read()
        if data and not data.endswith(b"\n"):
            self._file.truncate(data.rfind(b"\n") + 1)
        self._file.seek(0, os.SEEK_END)

    def entries(self) -> list[Entry]:
        """Every change in the journal with its answer's block, in order."""
        entries: dict[int, Entry] = {}
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line
                if "request" in record:
                    entries[int(record["seq"])] = Entry(
                        int(record["seq"]), json.dumps(record["request"]).encode()
                    )
                elif "ack" in record and int(record["ack"]) in entries:
                    entry = entries[int(record["ack"])]
                    entry.block, entry.timestamp = int(record["block"]), int(record["timestamp"])
                    entry.wall = float(record.get("wall", time.time()))
        return [entries[seq] for seq in sorted(entries)]

    def append(self, seq: int, request: Any) -> None:
        line = json.dumps({"seq": seq, "request": request}, separators=(",", ":"))
        end = self._file.tell()
        try:
            self._file.write(line.encode() + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            # Half a line would swallow the next one: cut it off (best effort).
            with contextlib.suppress(OSError):
                self._file.truncate(end)
            raise

    def ack(self, seq: int, block: int, timestamp: int) -> None:
        record = {"ack": seq, "block": block, "timestamp": timestamp, "wall": time.time()}
        line = json.dumps(record)
        self._file.write(line.encode() + b"\n")
        self._file.flush()

    def clear(self) -> None:
        """Empty the journal (every entry is in a saved state)."""
        self._file.truncate(0)
        self._file.seek(0)
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class _Unanswered(Exception):
    """anvil did not answer (it died, or never will in time)."""


class _Forwarder:
    """Keep-alive connections to anvil, one per thread; raw bytes in, raw bytes out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._local = threading.local()

    def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        for attempt in (0, 1):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                self._local.conn = conn
            conn.timeout = timeout
            try:
                conn.request("POST", "/", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                # A kept-alive connection anvil closed is retried once, but never a
                # request that may have been taken (a timeout).
                if attempt or isinstance(exc, TimeoutError):
                    raise _Unanswered(str(exc)) from None
        raise AssertionError("unreachable")

    def call(self, method: str, params: list[Any], timeout: float = 30.0) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        status, reply = self.post(body.encode(), timeout)
        answer = json.loads(reply)
        if status != 200 or "error" in answer:
            raise ChainError(f"{method}: {answer.get('error', status)}")
        return answer.get("result")


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (reset, broken pipe) is no error of ours;
        anything else is printed as the standard library does."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _error(request: Any, message: str) -> bytes:
    rid = request.get("id") if isinstance(request, dict) else None
    body = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": message}}
    return json.dumps(body).encode()


class ChainFront:
    """The JSON-RPC front `up` serves on the chain's port (see the module's doc).

    `dir` holds ``chain-state.json`` and ``chain-journal.jsonl``; anvil is started
    by the caller on :attr:`anvil_port` and handed over with :meth:`restore`."""

    def __init__(self, dir: Path, port: int, say: Callable[[str], None] = lambda _: None) -> None:
        self.dir = dir
        self.port = port
        self.anvil_port = free_port()
        self.state = dir / "chain-state.json"
        self.position, self._offset = self._saved_position()
        journal = dir / "chain-journal.jsonl"
        self.journal = Journal(journal)
        entries = self.journal.entries()
        if entries and entries[0].seq > self.position:
            # Changes made on a state that is gone (set aside as half-written): they
            # cannot be replayed on another chain. Kept, never deleted.
            self.journal.close()
            aside = dir / f"chain-journal.orphaned-{int(time.time())}.jsonl"
            os.replace(journal, aside)
            say(f"the chain journal does not follow the saved state: kept as {aside.name}")
            self.journal = Journal(journal)
            entries = []
        self._anvil = _Forwarder(self.anvil_port)
        self._lock = threading.Lock()
        """Held to forward a change, to save the state and to restore: one at a time."""
        self._serving = threading.Event()
        self._replies: dict[int, tuple[int, bytes]] = {}
        self._replayed = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None
        self._next = max([self.position, *(e.seq + 1 for e in entries)])
        self.replayed = 0
        """Changes replayed by the last :meth:`restore`."""
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def anvil_url(self) -> str:
        return f"http://127.0.0.1:{self.anvil_port}"

    def _saved_position(self) -> tuple[int, float]:
        if not self.state.exists():
            return 0, 0.0
        try:
            saved = json.loads(self.state.read_bytes())
        except ValueError:
            return 0, 0.0
        return int(saved.get(POSITION_KEY, 0)), float(saved.get(OFFSET_KEY, 0.0))

    # -- serving ------------------------------------------------------------------------

    def listen(self) -> None:
        """Answer on :attr:`port` (calls wait until :meth:`restore` is done)."""
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with front._conn_lock:
                    front._connections.add(self.connection)

            def finish(self) -> None:
                with front._conn_lock:
                    front._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("content-length") or 0)
                except ValueError:
                    self.send_error(400, "bad Content-Length")
                    return
                if not 0 <= length <= MAX_BODY:
                    self.send_error(413, "request too large")
                    return
                status, reply = front.handle(self.rfile.read(length))
                self.send_response(status)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_OPTIONS(self) -> None:
                # A browser wallet's page calls the chain from another origin, as it
                # calls anvil (which allows any origin): answer its preflight.
                asked = self.headers.get("access-control-request-headers") or "content-type"
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", asked[:256])
                self.send_header("Access-Control-Max-Age", "600")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="chain-front").start()

    def close(self) -> None:
        self._serving.clear()
        if self._server is not None:
            self._server.shutdown()
            # Kept-alive client connections each hold a thread waiting to read.
            with self._conn_lock:
                for conn in self._connections:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            self._server.server_close()
        self.journal.close()

    def handle(self, body: bytes) -> tuple[int, bytes]:
        """Answer one HTTP body: forwarded as is, a change journaled first."""
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if is_change(request):
            return self._change(body, request)
        deadline = time.monotonic() + WAIT
        while self._serving.wait(max(0.0, deadline - time.monotonic())):
            try:
                return self._anvil.post(body, CHANGE_TIMEOUT)
            except _Unanswered:
                time.sleep(0.1)  # anvil died: the supervisor restarts it
            if time.monotonic() > deadline:
                break
        return 503, _error(request, "the chain is restarting: try again")

    def _change(self, body: bytes, request: Any) -> tuple[int, bytes]:
        deadline = time.monotonic() + WAIT
        while self._serving.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                if not self._serving.is_set():
                    continue  # anvil died while this call waited for the lock
                seq = self._next
                try:
                    self.journal.append(seq, request)
                except OSError as exc:  # a full disk: refused, nothing forwarded
                    return 503, _error(request, f"the chain's journal cannot be written: {exc}")
                self._next += 1
                try:
                    answer = self._anvil.post(body, CHANGE_TIMEOUT)
                except _Unanswered:
                    # The change may or may not have been made: only a replay from
                    # the saved state knows. anvil is killed (if it still runs) and
                    # the supervisor restores it; this call gets the replay's answer.
                    self._serving.clear()
                    self._kill_anvil()
                else:
                    self._note_block(seq, request, answer[1])
                    return answer
            return self._replay_answer(seq, request, deadline)
        return 503, _error(request, "the chain is restarting: try again")

    def _note_block(self, seq: int, request: Any, reply: bytes) -> None:
        with contextlib.suppress(_Unanswered, ChainError, ValueError, TypeError, KeyError):
            self.journal.ack(seq, *self._block_after(request, reply))

    def _block_after(self, request: Any, reply: bytes) -> tuple[int, int]:
        """The block a change ended at: a sent transaction's own block (anvil may answer
        with its hash before mining it), else the latest."""
        block = None
        if isinstance(request, dict) and request.get("method") in CHANGES:
            tx = json.loads(reply).get("result")
            # anvil mines at once; a transaction it holds back (a nonce gap) is not
            # waited for long, with every other change waiting behind it.
            deadline = time.monotonic() + 1.0
            while isinstance(tx, str) and time.monotonic() < deadline:
                receipt = self._anvil.call("eth_getTransactionReceipt", [tx])
                if receipt is not None:
                    block = self._anvil.call(
                        "eth_getBlockByNumber", [receipt["blockNumber"], False]
                    )
                    break
                time.sleep(0.005)
        if block is None:
            block = self._anvil.call("eth_getBlockByNumber", ["latest", False])
        return int(block["number"], 16), int(block["timestamp"], 16)

    def _replay_answer(self, seq: int, request: Any, deadline: float) -> tuple[int, bytes]:
        with self._replayed:
            while seq not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 503, _error(request, "the chain is restarting: try again")
                self._replayed.wait(left)
            return self._replies[seq]

    def _kill_anvil(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    # -- the state ----------------------------------------------------------------------

    def down(self) -> None:
        """anvil died: calls wait from now on."""
        self._serving.clear()

    def restore(self, process: subprocess.Popen[bytes], timeout: float = 120.0) -> int:
        """Once `process` (anvil on :attr:`anvil_port`, started on the saved state)
        answers: replay the journal after the saved position, set the clock, serve.
        Returns how many changes were replayed; :class:`ChainError` if anvil does not
        answer or dies meanwhile."""
        with self._lock:
            self._process = process
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise ChainError(f"anvil exited at start (code {process.returncode})")
                try:
                    self._anvil.call("eth_chainId", [], timeout=2.0)
                    break
                except (_Unanswered, ChainError, ValueError):
                    if time.monotonic() > deadline:
                        raise ChainError(f"anvil did not answer within {timeout:.0f} s") from None
                    time.sleep(0.05)
            try:
                self.replayed = self._replay()
            except _Unanswered as exc:
                raise ChainError(f"anvil died while the journal was replayed: {exc}") from None
            self._serving.set()
        with self._replayed:
            self._replayed.notify_all()
        return self.replayed

    def _replay(self) -> int:
        entries = [e for e in self.journal.entries() if e.seq >= self.position]
        latest = self._anvil.call("eth_getBlockByNumber", ["latest", False])
        number, stamp = int(latest["number"], 16), int(latest["timestamp"], 16)
        offset = self._offset
        for entry in entries:
            if entry.block == number + 1 and entry.timestamp is not None:
                # The block this change mined gets the timestamp it had (anvil refuses
                # one before its clock, so the clock goes back to the last block first).
                with contextlib.suppress(ChainError):
                    self._anvil.call("evm_setTime", [stamp])
                    self._anvil.call("evm_setNextBlockTimestamp", [entry.timestamp])
            reply = self._anvil.post(entry.body, CHANGE_TIMEOUT)
            with self._replayed:
                self._replies[entry.seq] = reply
            number, stamp = self._block_after(json.loads(entry.body), reply[1])
            if entry.block is None:
                # Never answered before: its block is noted now, for a later replay.
                self.journal.ack(entry.seq, number, stamp)
                offset = stamp - time.time()
            elif entry.timestamp is not None and entry.wall is not None:
                offset = entry.timestamp - entry.wall
        # anvil does not save its clock: a chain moved forward (evm_increaseTime)
        # would otherwise go back to the wall clock, before its last block.
        if entries or stamp > time.time():
            with contextlib.suppress(ChainError):
                self._anvil.call("evm_setTime", [int(max(time.time() + offset, stamp))])
        with self._replayed:
            for seq in [s for s in self._replies if s < self._next - 10_000]:
                del self._replies[seq]
        return len(entries)

    def _pool_holds_some(self) -> bool:
        try:
            pool = self._anvil.call("txpool_status", [])
            return int(pool["pending"], 16) + int(pool["queued"], 16) > 0
        except (_Unanswered, ChainError, KeyError, TypeError, ValueError):
            return False  # no txpool_status (anvil mines at once), or no answer: the dump says

    def checkpoint(self, since_block: int | None = None) -> int | None:
        """Save anvil's state with the journal position it covers, then empty the
        journal. With `since_block`, nothing is written while the chain is still at
        that block and the journal is empty. Returns the saved block (None: nothing
        written). :class:`ChainError` if the state cannot be read."""
        with self._lock:
            if not self._serving.is_set():
                raise ChainError("the chain is restarting")
            try:
                block = int(self._anvil.call("eth_blockNumber", []), 16)
                pending = self._anvil.call("eth_getBlockByNumber", ["pending", False])
            except (_Unanswered, ValueError) as exc:
                raise ChainError(f"cannot read the chain: {exc}") from None
            if block == since_block and self._next == self.position:
                return None
            if since_block is not None and self._pool_holds_some():
                return None  # a save now would drop them with the journal: later
            state = json.loads(dump_state(self.anvil_url))
            state[POSITION_KEY] = self._next
            state[OFFSET_KEY] = int(pending["timestamp"], 16) - time.time()
            write_atomically(self.state, json.dumps(state).encode(), 0o600)
            self.position, self._offset = self._next, state[OFFSET_KEY]
            self.journal.clear()
            return block
