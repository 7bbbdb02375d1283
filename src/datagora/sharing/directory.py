"""Where a proxy's address and Umbral public key come from: a :class:`ProxyDirectory`.

An agent seals each key fragment to its proxy's Umbral key and addresses the signed
delivery to the proxy's account, so it must know both for every proxy URL. The node
registry (``NodeRegistry.vy``, its ``umbral_pk``) is meant to supply them; until it
does, :class:`HttpProxyDirectory` asks each proxy (``GET /identity``) and remembers
the answer. A proxy that lies about its key only makes its own fragment useless: the
fragment sealed to a key it does not hold never verifies at the proxy, and a key it
does hold belongs to it anyway.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx
import umbral_pre

from datagora.crypto.eip712 import to_checksum_address
from datagora.sharing.errors import ProxyUnavailable

__all__ = ["HttpProxyDirectory", "ProxyDirectory", "ProxyInfo", "StaticProxyDirectory"]

_IDENTITY_FORMAT: Final = "datagora.proxy-identity.v1"


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """One proxy: where it listens, its account and its Umbral public key (33 bytes)."""

    url: str
    address: str
    umbral_public_key: bytes


class ProxyDirectory(Protocol):
    """Looks proxies up by URL; raises :class:`ProxyUnavailable` when it cannot."""

    def lookup(self, url: str) -> ProxyInfo: ...


class StaticProxyDirectory:
    """A fixed table (tests, or a registry snapshot)."""

    def __init__(self, proxies: list[ProxyInfo]) -> None:
        self._by_url = {p.url.rstrip("/"): p for p in proxies}

    def lookup(self, url: str) -> ProxyInfo:
        try:
            return self._by_url[url.rstrip("/")]
        except KeyError:
            raise ProxyUnavailable(f"no proxy {url} in the directory") from None


def parse_identity(url: str, data: Any, chain_id: int | None = None) -> ProxyInfo:
    """Check a ``datagora.proxy-identity.v1`` answer; raises :class:`ProxyUnavailable`."""
    try:
        if data["format"] != _IDENTITY_FORMAT:
            raise ValueError("format")
        if chain_id is not None and data["chain_id"] != chain_id:
            raise ProxyUnavailable(
                f"proxy {url} is on chain {data['chain_id']}, not on chain {chain_id}"
            )
        key = bytes.fromhex(data["umbral_public_key"])
        umbral_pre.PublicKey.from_compressed_bytes(key)
        return ProxyInfo(url, to_checksum_address(data["address"]), key)
    except (KeyError, TypeError, ValueError):
        raise ProxyUnavailable(f"proxy {url} answered no valid identity record") from None


class HttpProxyDirectory:
    """Asks each proxy for its identity once (``GET /identity``) and remembers it."""

    def __init__(self, chain_id: int | None = None, timeout: float = 10.0) -> None:
        self.chain_id = chain_id
        self.timeout = timeout
        self._known: dict[str, ProxyInfo] = {}
        self._lock = threading.Lock()

    def lookup(self, url: str) -> ProxyInfo:
        with self._lock:
            known = self._known.get(url)
        if known is not None:
            return known
        try:
            response = httpx.get(f"{url.rstrip('/')}/identity", timeout=self.timeout)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise ProxyUnavailable(
                f"proxy {url} did not say who it is ({type(exc).__name__})"
            ) from None
        info = parse_identity(url, data, self.chain_id)
        with self._lock:
            self._known[url] = info
        return info
