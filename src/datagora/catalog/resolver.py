"""Finding a dataset's metadata document from its on-chain URI and hash.

Sources, in order: documents pushed to this catalog (`PUT /metadata`), then the
URI: ``datagora://sha256/<hex>`` is looked up on the configured storage nodes
(content-addressed, so any node will do), ``https://`` / ``http://`` is fetched
with a size cap, a short timeout and no redirects. Whatever the source, bytes
count only if they hash to the on-chain value.
"""

from __future__ import annotations

import hashlib

import httpx

from datagora.storage.metadata import MAX_METADATA_BYTES

DATAGORA_SCHEME = "datagora://sha256/"


def datagora_uri(sha256: bytes) -> str:
    """The URI of a content-addressed document on datagora's storage nodes."""
    return DATAGORA_SCHEME + sha256.hex()


class MetadataResolver:
    def __init__(
        self, storage_nodes: list[str] | None = None, timeout: float = 2.0, fetch_http: bool = True
    ) -> None:
        self.storage_nodes = [n.rstrip("/") for n in storage_nodes or []]
        self.fetch_http = fetch_http
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def _get(self, url: str, limit: int = MAX_METADATA_BYTES) -> bytes | None:
        try:
            with self._client.stream("GET", url) as r:
                if r.status_code != 200:
                    return None
                body = b""
                for piece in r.iter_bytes():
                    body += piece
                    if len(body) > limit:
                        return None
                return body
        except httpx.HTTPError:
            return None

    def resolve(self, uri: str, expected: bytes) -> bytes | None:
        """The document at `uri` if one hashing to `expected` can be found, else None."""
        return self.fetch(uri, expected)

    def fetch(self, uri: str, expected: bytes, limit: int = MAX_METADATA_BYTES) -> bytes | None:
        """Any content-addressed document (metadata, mock data) of at most `limit` bytes."""
        candidates: list[str] = []
        if uri.startswith(DATAGORA_SCHEME) or not uri:
            name = expected.hex()
            candidates = [f"{node}/shares/{name}" for node in self.storage_nodes]
        elif uri.startswith(("https://", "http://")) and self.fetch_http:
            candidates = [uri]
        for url in candidates:
            body = self._get(url, limit)
            if body is not None and hashlib.sha256(body).digest() == expected:
                return body
        return None

    def close(self) -> None:
        self._client.close()
