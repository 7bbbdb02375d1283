"""The lean HTTP/1.1 client of the storage client, against real loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from datagora.http1 import Http1Error, Http1Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serving(handler: Handler, timeout: float = 5) -> AsyncIterator[tuple[Http1Pool, str]]:
    """A loopback server running ``handler``, and a pool to talk to it."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    pool = Http1Pool(timeout=timeout)
    try:
        yield pool, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        await pool.close()
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def test_body_pieces_arrive_whole_and_connections_are_reused() -> None:
    connections = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                _, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        writer.close()

    async def main() -> None:
        async with _serving(echo) as (pool, base):
            for _ in range(3):
                answer = await pool.request("PUT", f"{base}/shares", [b"ab", b"", b"cde" * 1000])
                assert answer.status == 201 and answer.content == b"ab" + b"cde" * 1000
        assert connections == 1

    asyncio.run(main())


def test_chunked_answers_are_decoded_and_limits_enforced() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _serving(chunked) as (pool, base):
            assert (await pool.request("POST", f"{base}/x")).content == b"hello world"
            with pytest.raises(Http1Error, match="more than the 4 bytes"):
                await pool.request("POST", f"{base}/x", limit=4)

    asyncio.run(main())


def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one() -> None:
    served = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers one request, then closes (as an idle-timeout would), without saying so.
        nonlocal served
        await _read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _serving(once) as (pool, base):
            assert (await pool.request("GET", f"{base}/a")).content == b"ok"
            await asyncio.sleep(0.05)
            assert (await pool.request("GET", f"{base}/b")).content == b"ok"
        assert served == 2

    asyncio.run(main())


def test_silence_times_out_and_refusal_is_unreachable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        async with _serving(silent, timeout=0.3) as (pool, base):
            with pytest.raises(Http1Error) as slow:
                await pool.request("GET", f"{base}/x")
            assert slow.value.timed_out
            with pytest.raises(Http1Error, match="unreachable") as down:
                await pool.request("GET", base.rsplit(":", 1)[0] + ":9/x")
            assert not down.value.timed_out

    asyncio.run(main())


def test_malformed_answers_are_errors_not_guesses() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _serving(garbage) as (pool, base):
            with pytest.raises(Http1Error, match="status line"):
                await pool.request("GET", f"{base}/x")

    asyncio.run(main())
