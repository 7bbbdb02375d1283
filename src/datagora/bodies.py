"""Reading an HTTP request body with a cap, refusing it before holding all of it.

``await request.body()`` reads everything a client sends before any size check
runs: a client announcing (or streaming) gigabytes costs the server that much
memory and time. :func:`read_capped` refuses a declared ``Content-Length`` over
the cap at once, without reading a byte of the body, and stops reading a body
that grows past the cap while it streams (chunked, or a length that lied).
"""

from __future__ import annotations

from starlette.requests import Request


def declared_too_large(request: Request, cap: int) -> bool:
    """True if the request announces a body of more than `cap` bytes."""
    declared = request.headers.get("content-length")
    return declared is not None and declared.strip().isdigit() and int(declared) > cap


async def read_capped(request: Request, cap: int) -> bytes | None:
    """The body if it is at most `cap` bytes, else None (answer 413); reads at most
    `cap` bytes plus one received piece."""
    if declared_too_large(request, cap):
        return None
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > cap:
            return None
    return bytes(body)
