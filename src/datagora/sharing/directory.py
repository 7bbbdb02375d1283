"""Where a proxy's address and Umbral public key come from: a :class:`ProxyDirectory`.

An agent seals each key fragment to its proxy's Umbral key and addresses the signed
delivery to the proxy's account, so it must know both for every proxy URL. The node
registry (``NodeRegistry.vy``: endpoint and ``umbral_pk`` of each active proxy-role
node) supplies them: :class:`RegistryProxyDirectory`, which every agent and consumer
with a ledger uses. It also asks the proxy who it is (``GET /identity``) and refuses a
proxy whose served account or key differs from its registered one (a stale record or
an endpoint taken over). The answer is signed by the account it names over a fresh
random challenge of the asker's (``datagora.proxy-identity.v2``), so whoever holds
the endpoint without the registered account's key cannot pass for it, not even by
replaying an answer the proxy gave before. A URL the registry does not list is looked up over HTTP
alone only when the directory was given a ``fallback`` (explicit proxy lists of tests
and development networks, whose proxies are not registered). A proxy that lies about
its key only makes its own fragment useless: the fragment sealed to a key it does not
hold never verifies at the proxy, and a key it does hold belongs to it anyway.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx
import umbral_pre

from datagora.crypto.eip712 import to_checksum_address
from datagora.sharing.answers import identity_digest, recover_answer
from datagora.sharing.errors import ProxyUnavailable
from datagora.tls import verify_context

if TYPE_CHECKING:
    from datagora.ledger import Ledger

__all__ = [
    "HttpProxyDirectory",
    "ProxyDirectory",
    "ProxyInfo",
    "RegistryProxyDirectory",
    "StaticProxyDirectory",
]

_IDENTITY_FORMAT: Final = "datagora.proxy-identity.v2"


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


def parse_identity(
    url: str, data: Any, chain_id: int | None = None, challenge: bytes = bytes(32)
) -> ProxyInfo:
    """Check a ``datagora.proxy-identity.v2`` answer to ``challenge``: its signature must
    recover to the account it names, over this very challenge, chain, contract and key.
    Raises :class:`ProxyUnavailable`."""
    try:
        if data["format"] != _IDENTITY_FORMAT:
            raise ValueError("format")
        if chain_id is not None and data["chain_id"] != chain_id:
            raise ProxyUnavailable(
                f"proxy {url} is on chain {data['chain_id']}, not on chain {chain_id}"
            )
        key = bytes.fromhex(data["umbral_public_key"])
        umbral_pre.PublicKey.from_compressed_bytes(key)
        address = to_checksum_address(data["address"])
        service, contract = data["service"], to_checksum_address(data["verifying_contract"])
        if isinstance(service, bool) or not isinstance(service, int) or service < 0:
            raise ValueError("service")
        digest = identity_digest(int(data["chain_id"]), contract, address, key, service, challenge)
        signer = recover_answer(digest, bytes.fromhex(data["signature"]))
    except (KeyError, TypeError, ValueError):
        raise ProxyUnavailable(f"proxy {url} answered no valid identity record") from None
    if signer != address:
        raise ProxyUnavailable(
            f"proxy {url} says it is {address} but its identity is not signed by that "
            "account (for this challenge): not used"
        )
    return ProxyInfo(url, address, key)


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
        challenge = os.urandom(32)  # a fresh answer, signed now by the account it names
        try:
            response = httpx.get(
                f"{url.rstrip('/')}/identity",
                params={"challenge": challenge.hex()},
                timeout=self.timeout,
                verify=verify_context(),
            )
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise ProxyUnavailable(
                f"proxy {url} did not say who it is ({type(exc).__name__})"
            ) from None
        info = parse_identity(url, data, self.chain_id, challenge)
        with self._lock:
            self._known[url] = info
        return info


class RegistryProxyDirectory:
    """Proxies as the NodeRegistry records them: the active proxy-role node whose
    endpoint is the URL, with its registered account and Umbral key, used only if the
    proxy itself serves that same account and key (``GET /identity``).

    ``fallback``: where to look up a URL no active registered proxy has (an explicit
    list of unregistered development proxies); None refuses such URLs. Records are
    read again after ``ttl`` seconds, so a proxy that left or changed key stops being
    used."""

    def __init__(
        self,
        ledger: Ledger,
        fallback: ProxyDirectory | None = None,
        timeout: float = 10.0,
        ttl: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.fallback = fallback
        self._timeout = timeout
        self._served = HttpProxyDirectory(ledger.chain.chain_id, timeout)
        self.ttl = ttl
        self._lock = threading.Lock()
        self._table: dict[str, ProxyInfo] = {}
        self._read_at = float("-inf")

    def _registered(self) -> dict[str, ProxyInfo]:
        import time

        from datagora.ledger.registry import Role

        with self._lock:
            if time.monotonic() - self._read_at < self.ttl:
                return self._table
        table = {
            n.endpoint.rstrip("/"): ProxyInfo(n.endpoint.rstrip("/"), n.address, n.umbral_pk)
            for n in self.ledger.registry.nodes(Role.PROXY)
            if n.umbral_pk
        }
        with self._lock:
            self._table, self._read_at = table, time.monotonic()
            # What proxies serve is asked again too (a proxy may have changed its key).
            self._served = HttpProxyDirectory(self.ledger.chain.chain_id, self._timeout)
        return table

    def by_address(self, address: str) -> ProxyInfo:
        """The active registered proxy with account `address` (ProxyUnavailable if none)."""
        wanted = to_checksum_address(address)
        for info in self._registered().values():
            if info.address == wanted:
                return info
        raise ProxyUnavailable(f"{wanted} is not an active proxy with a key in the registry")

    def lookup(self, url: str) -> ProxyInfo:
        registered = self._registered().get(url.rstrip("/"))
        if registered is None:
            if self.fallback is None:
                raise ProxyUnavailable(f"no active registered proxy at {url}")
            return self.fallback.lookup(url)
        with self._lock:
            served_directory = self._served
        served = served_directory.lookup(url)
        if (served.address, served.umbral_public_key) != (
            registered.address,
            registered.umbral_public_key,
        ):
            raise ProxyUnavailable(
                f"proxy {url} serves account {served.address} and key "
                f"{served.umbral_public_key.hex()[:16]}..., not the registered "
                f"{registered.address} and {registered.umbral_public_key.hex()[:16]}...: not used"
            )
        return registered


def dataset_proxies(ledger: Ledger, dataset: int) -> tuple[list[str], int] | None:
    """The endpoints and threshold of the proxies `dataset`'s controller chose on chain
    (``ProxySets``), or None if it chose none (or the deployment predates it). A chosen
    proxy that is no longer active in the registry has no endpoint: it is left out, so
    fewer proxies may remain than chosen (the threshold stays)."""
    if ledger.proxy_sets is None:
        return None
    chosen = ledger.proxy_sets.proxies_of(dataset)
    if not chosen.chosen:
        return None
    from datagora.ledger.registry import Role

    active = {n.address: n.endpoint.rstrip("/") for n in ledger.registry.nodes(Role.PROXY)}
    return [active[p] for p in chosen.proxies if p in active], chosen.threshold
