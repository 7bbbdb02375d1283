"""Reading an HTTP request body with a cap, refusing it before holding all of it.

``await request.body()`` reads everything a client sends before any size check
runs: a client announcing (or streaming) gigabytes costs the server that much
memory and time. :func:`read_capped` refuses a declared ``Content-Length`` over
the cap at once, without reading a byte of the body, and stops reading a body
that grows past the cap while it streams (chunked, or a length that lied).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request


class Refusal(BaseModel):
    """A 4xx answer's body, as the OpenAPI documents declare it: why, in one line
    (``detail``; FastAPI's own validation errors give a list of invalid fields), and
    the service's error code where it has one."""

    error: str | None = None
    detail: str | list[dict[str, Any]]


def why(text: str) -> dict[str, Any]:
    """A documented refusal (for a route's ``responses=``): `text` and :class:`Refusal`."""
    return {"description": text, "model": Refusal}


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


def refusal_text(payload: object, fallback: str) -> str:
    """One line from a 4xx JSON body: its ``detail`` as a sentence.

    FastAPI's validation errors carry ``detail`` as a list of ``{"loc", "msg"}``
    objects; those become ``"query.limit: Input should be ... ; ..."`` rather than a
    Python repr. Anything else unexpected gives `fallback` (e.g. the body's text)."""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail[:5]:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
            msg = str(item.get("msg", "invalid"))
            parts.append(f"{loc}: {msg}" if loc else msg)
        more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
        return "; ".join(parts) + more
    return fallback
