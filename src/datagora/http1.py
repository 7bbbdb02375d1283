"""A lean HTTP/1.1 client for hot paths: share batches, and a proxy's chain reads.

Share batches are megabytes each, and most of their cost should be the bytes.
httpx spends about 1.3 ms of CPU per MB of shares on its layers (httpcore, anyio,
h11, per-piece bookkeeping), which on this project's machines was as much as the
AES-GCM and SHA-256 work of the pipeline itself. The batch endpoints
(``PUT /shares``, ``POST /shares/batch-get``) therefore go through this client:
asyncio streams, one keep-alive connection per request slot and node, the body
written as ``writelines`` of its pieces, the response read by ``Content-Length``
(or chunked framing).

The proxy's access gate sends its batched ``eth_call``s to a plain-http RPC
endpoint the same way. Only plain ``http://`` is spoken; callers use httpx (or
web3) for ``https://`` and for every other request. Every request runs under one deadline; a
connection that fails or times out is closed, never reused. A request on a reused
keep-alive connection that the server had already closed is retried once on a
fresh connection; callers only send idempotent requests (content-addressed
writes and reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from datagora.errors import DatagoraError

__all__ = ["Http1Error", "Http1Pool", "Http1Response"]

_MAX_HEAD_BYTES: Final = 64 * 1024
_MAX_IDLE_PER_HOST: Final = 16


class Http1Error(DatagoraError):
    """The request failed on the wire: unreachable, timed out, or a malformed answer."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


class _StaleConnection(Exception):
    """A reused connection was closed by the server before it answered."""


@dataclass(frozen=True)
class Http1Response:
    status: int
    headers: dict[str, str]
    content: bytes


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Http1Pool:
    """Keep-alive connections per ``host:port``; ``timeout`` bounds each request."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith("http://")

    async def request(
        self,
        method: str,
        url: str,
        body: Sequence[bytes] = (),
        content_type: str = "application/octet-stream",
        limit: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Http1Response:
        """Send ``body`` (pieces written in order, never joined) and read the whole
        answer; a body longer than ``limit`` bytes is refused. Raises
        :class:`Http1Error`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise Http1Error(f"not a plain http URL: {url}")
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        length = sum(len(p) for p in body)
        head = (
            f"{method} {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {length}\r\n"
            "accept: */*\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            + "\r\n"
        ).encode("latin-1")
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(2):
                    conn, reused = await self._connection(host, port)
                    try:
                        response, keep = await self._exchange(conn, head, body, limit, reused)
                    except _StaleConnection:
                        conn[1].close()
                        continue
                    except BaseException:
                        conn[1].close()
                        raise
                    if keep:
                        self._release((host, port), conn)
                    else:
                        conn[1].close()
                    return response
                raise Http1Error("the connection was closed before an answer, twice")
        except TimeoutError:
            raise Http1Error(f"timed out after {self.timeout:g} s", timed_out=True) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise Http1Error(f"unreachable ({type(exc).__name__})") from None

    async def _connection(self, host: str, port: int) -> tuple[_Conn, bool]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections belong to the loop that opened them; a pool used from a new
            # loop (another asyncio.run) starts afresh.
            self._idle.clear()
            self._loop = loop
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn, True
            conn[1].close()
        reader, writer = await asyncio.open_connection(host, port, limit=_MAX_HEAD_BYTES)
        return (reader, writer), False

    def _release(self, key: tuple[str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < _MAX_IDLE_PER_HOST:
            idle.append(conn)
        else:
            conn[1].close()

    async def _exchange(
        self,
        conn: _Conn,
        head: bytes,
        body: Sequence[bytes],
        limit: int | None,
        reused: bool,
    ) -> tuple[Http1Response, bool]:
        reader, writer = conn
        try:
            writer.write(head)
            writer.writelines(body)
            await writer.drain()
            status_line = await reader.readline()
        except (ConnectionError, asyncio.IncompleteReadError):
            if reused:
                raise _StaleConnection from None
            raise
        if not status_line:
            if reused:
                raise _StaleConnection
            raise Http1Error("the node closed the connection without answering")
        try:
            version, code, _ = status_line.decode("latin-1").split(" ", 2)
            status = int(code)
        except ValueError:
            raise Http1Error("malformed HTTP status line") from None
        if not version.startswith("HTTP/1."):
            raise Http1Error(f"unsupported protocol {version!r}")
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise Http1Error("the answer's headers were cut off")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise Http1Error("malformed HTTP header")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            content = await _read_chunked(reader, limit)
        elif "content-length" in headers:
            try:
                size = int(headers["content-length"])
            except ValueError:
                raise Http1Error("malformed Content-Length") from None
            if size < 0 or (limit is not None and size > limit):
                raise Http1Error(f"answered with more than the {limit} bytes asked for")
            content = await reader.readexactly(size)
        else:
            content = await _read_to_eof(reader, limit)
            keep = False
        return Http1Response(status, headers, content), keep

    async def close(self) -> None:
        writers = [w for conns in self._idle.values() for _, w in conns]
        self._idle.clear()
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_chunked(reader: asyncio.StreamReader, limit: int | None) -> bytes:
    pieces: list[bytes] = []
    total = 0
    while True:
        line = await reader.readline()
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise Http1Error("malformed chunked body") from None
        if size == 0:
            while (trailer := await reader.readline()) not in (b"\r\n", b"\n"):
                if not trailer:
                    raise Http1Error("the chunked body was cut off")
            return b"".join(pieces)
        total += size
        if limit is not None and total > limit:
            raise Http1Error(f"answered with more than the {limit} bytes asked for")
        pieces.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_to_eof(reader: asyncio.StreamReader, limit: int | None) -> bytes:
    pieces: list[bytes] = []
    total = 0
    while piece := await reader.read(1 << 20):
        total += len(piece)
        if limit is not None and total > limit:
            raise Http1Error(f"answered with more than the {limit} bytes asked for")
        pieces.append(piece)
    return b"".join(pieces)
