"""Finding a dataset's metadata document from its on-chain URI and hash.

Sources, in order: documents pushed to this catalog (`PUT /metadata`), then the
URI: ``datagora://sha256/<hex>`` is looked up on the configured storage nodes
(content-addressed, so any node will do), ``https://`` / ``http://`` is fetched
with a size cap, no redirects and one total deadline per document (a server
dripping a byte a second is cut off at the deadline, not kept alive by it).
Whatever the source, bytes count only if they hash to the on-chain value.

The http(s) URI comes from whoever published the dataset, so a catalog fetching
it must not become a way to reach addresses only it can reach: unless
``allow_private`` is set (a development network on loopback), a host that
resolves to any non-public address (loopback, private, link-local, reserved…)
is not asked. The configured storage nodes are the operator's choice and are
always asked.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time

import httpx

from datagora.storage.metadata import MAX_METADATA_BYTES
from datagora.tls import verify_context

DATAGORA_SCHEME = "datagora://sha256/"
DEFAULT_DEADLINE_S = 10.0
"""The longest one document's fetch may take, from connecting to its last byte."""


def datagora_uri(sha256: bytes) -> str:
    """The URI of a content-addressed document on datagora's storage nodes."""
    return DATAGORA_SCHEME + sha256.hex()


def is_public_host(host: str, port: int) -> bool:
    """True if every address `host` resolves to is a public (global) one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    if not infos:
        return False
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global:
            return False
    return True


class MetadataResolver:
    """Fetches content-addressed documents from storage nodes and http(s) URIs."""

    def __init__(
        self,
        storage_nodes: list[str] | None = None,
        timeout: float = 2.0,
        fetch_http: bool = True,
        *,
        deadline: float = DEFAULT_DEADLINE_S,
        allow_private: bool = False,
    ) -> None:
        self.storage_nodes = [n.rstrip("/") for n in storage_nodes or []]
        self.fetch_http = fetch_http
        self.timeout = timeout
        self.deadline = deadline
        self.allow_private = allow_private
        self._client = httpx.Client(
            timeout=timeout, follow_redirects=False, verify=verify_context()
        )

    def _get(self, url: str, limit: int, deadline: float) -> bytes | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            # Each network operation waits at most what is left of the deadline, and
            # the deadline is checked after every piece: a slow drip cannot outlast it.
            with self._client.stream("GET", url, timeout=min(self.timeout, remaining)) as r:
                if r.status_code != 200:
                    return None
                body = bytearray()
                for piece in r.iter_bytes():
                    body += piece
                    if len(body) > limit or time.monotonic() > deadline:
                        return None
                return bytes(body)
        except httpx.HTTPError:
            return None

    def allowed(self, url: str) -> bool:
        """Whether an http(s) URI may be fetched (public host, or private ones allowed)."""
        if self.allow_private:
            return True
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return False
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return bool(parsed.host) and is_public_host(parsed.host, port)

    def resolve(self, uri: str, expected: bytes) -> bytes | None:
        """The document at `uri` if one hashing to `expected` can be found, else None."""
        return self.fetch(uri, expected)

    def fetch(self, uri: str, expected: bytes, limit: int = MAX_METADATA_BYTES) -> bytes | None:
        """Any content-addressed document (metadata, mock data) of at most `limit` bytes,
        found within the resolver's deadline, or None."""
        deadline = time.monotonic() + self.deadline
        candidates: list[str] = []
        if uri.startswith(DATAGORA_SCHEME) or not uri:
            name = expected.hex()
            candidates = [f"{node}/shares/{name}" for node in self.storage_nodes]
        elif uri.startswith(("https://", "http://")) and self.fetch_http and self.allowed(uri):
            candidates = [uri]
        for url in candidates:
            body = self._get(url, limit, deadline)
            if body is not None and hashlib.sha256(body).digest() == expected:
                return body
        return None

    def close(self) -> None:
        self._client.close()
