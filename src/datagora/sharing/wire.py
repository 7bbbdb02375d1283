"""The JSON bodies exchanged with proxies (formats written down in ``docs/sharing.md``).

``datagora.kfrag-delivery.v1`` — owner (agent) → proxy, ``PUT /kfrags``: a signed
:class:`~datagora.sharing.requests.DelegationRequest` plus one key fragment and the
owner's public verifying and delegating keys. The delegation request has no field
for the fragment, so its ``nonce`` *commits* to it: ``nonce = SHA-256(label ‖ salt ‖
kfrag ‖ verifying_key ‖ delegating_key)`` with a fresh random 32-byte ``salt`` sent
alongside. The nonce stays unique per request (the salt is random) and the owner's
signature covers the fragment, so nobody on the way can swap it.

``datagora.reencrypt-request.v1`` — consumer → proxy, ``POST /reencrypt``: a
signed :class:`~datagora.sharing.requests.FragmentRequest` plus the capsule bytes, whose
SHA-256 must be the request's ``capsule`` field.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from starlette.concurrency import run_in_threadpool

from datagora.crypto.eip712 import SignedRequest, new_nonce, sign_request
from datagora.crypto.errors import MalformedRequest
from datagora.crypto.keys import Identity
from datagora.sharing.requests import DelegationRequest, FragmentRequest

__all__ = [
    "DELIVERY_FORMAT",
    "REENCRYPT_FORMAT",
    "REQUEST_LIFETIME_S",
    "KfragDelivery",
    "ReencryptBody",
    "delivery_nonce",
]

DELIVERY_FORMAT: Final = "datagora.kfrag-delivery.v1"
REENCRYPT_FORMAT: Final = "datagora.reencrypt-request.v1"
REQUEST_LIFETIME_S: Final = 120
"""How long the requests made here stay valid (services accept at most 600 s)."""
_DELIVERY_LABEL: Final = b"datagora/kfrag-delivery/v1"
_MAX_KFRAG: Final = 1024
_MAX_CAPSULE: Final = 1024


def delivery_nonce(salt: bytes, kfrag: bytes, verifying_key: bytes, delegating_key: bytes) -> bytes:
    """The nonce of a delegation request that commits to the fragment it delivers."""
    return hashlib.sha256(_DELIVERY_LABEL + salt + kfrag + verifying_key + delegating_key).digest()


def _hex(data: Mapping[str, Any], name: str, *, size: int | None = None, limit: int = 0) -> bytes:
    text = data.get(name)
    try:
        if not isinstance(text, str) or text != text.lower():
            raise ValueError
        raw = bytes.fromhex(text)
    except ValueError:
        raise MalformedRequest(f"{name} must be lowercase hex") from None
    if size is not None and len(raw) != size:
        raise MalformedRequest(f"{name} must be {size} bytes")
    if limit and not 0 < len(raw) <= limit:
        raise MalformedRequest(f"{name} must be 1 to {limit} bytes")
    return raw


def _signed(data: Any, expect: type[Any]) -> SignedRequest[Any]:
    signed = SignedRequest.from_json(data)
    if not isinstance(signed.request, expect):
        raise MalformedRequest(f"expected a signed {expect.PRIMARY_TYPE}")
    return signed


@dataclass(frozen=True, slots=True)
class KfragDelivery:
    """One key fragment for one proxy, with the owner's signed delegation request."""

    signed: SignedRequest[DelegationRequest]
    kfrag: bytes
    verifying_key: bytes
    delegating_key: bytes
    salt: bytes

    @classmethod
    def build(
        cls,
        owner: Identity,
        chain_id: int,
        *,
        dataset: int,
        version: int,
        consumer: str,
        consumer_key: bytes,
        grant: int,
        threshold: int,
        shares: int,
        batch: bytes,
        kfrag: bytes,
        delegating_key: bytes,
    ) -> KfragDelivery:
        """Sign a delivery of ``kfrag`` (valid :data:`REQUEST_LIFETIME_S` seconds)."""
        salt = os.urandom(32)
        nonce = delivery_nonce(salt, kfrag, owner.verifying_key, delegating_key)
        request = DelegationRequest(
            owner=owner.address,
            consumer=consumer,
            consumer_key=consumer_key,
            dataset=dataset,
            version=version,
            grant=grant,
            threshold=threshold,
            shares=shares,
            batch=batch,
            nonce=nonce,
            expires=int(time.time()) + REQUEST_LIFETIME_S,
        )
        signed = sign_request(owner, request, chain_id)
        return cls(signed, kfrag, owner.verifying_key, delegating_key, salt)

    def commitment_holds(self) -> bool:
        """True if the signed nonce commits to this fragment and these keys."""
        expected = delivery_nonce(self.salt, self.kfrag, self.verifying_key, self.delegating_key)
        return expected == self.signed.request.nonce

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DELIVERY_FORMAT,
            "request": self.signed.to_json(),
            "kfrag": self.kfrag.hex(),
            "verifying_key": self.verifying_key.hex(),
            "delegating_key": self.delegating_key.hex(),
            "salt": self.salt.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> KfragDelivery:
        """Parse a delivery; raises :class:`MalformedRequest`."""
        fields = {"format", "request", "kfrag", "verifying_key", "delegating_key", "salt"}
        if not isinstance(data, Mapping) or data.get("format") != DELIVERY_FORMAT:
            raise MalformedRequest(f"not a {DELIVERY_FORMAT} object")
        if set(data) != fields:
            raise MalformedRequest("a kfrag delivery has exactly: " + " ".join(sorted(fields)))
        return cls(
            _signed(data["request"], DelegationRequest),
            _hex(data, "kfrag", limit=_MAX_KFRAG),
            _hex(data, "verifying_key", size=33),
            _hex(data, "delegating_key", size=33),
            _hex(data, "salt", size=32),
        )


@dataclass(frozen=True, slots=True)
class ReencryptBody:
    """A consumer's signed fragment request with the capsule it names."""

    signed: SignedRequest[FragmentRequest]
    capsule: bytes

    @classmethod
    def build(
        cls, consumer: Identity, chain_id: int, dataset: int, version: int, capsule: bytes
    ) -> ReencryptBody:
        """Sign a request for ``capsule`` (valid :data:`REQUEST_LIFETIME_S` seconds)."""
        request = FragmentRequest(
            consumer=consumer.address,
            dataset=dataset,
            version=version,
            capsule=hashlib.sha256(capsule).digest(),
            nonce=new_nonce(),
            expires=int(time.time()) + REQUEST_LIFETIME_S,
        )
        return cls(sign_request(consumer, request, chain_id), capsule)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REENCRYPT_FORMAT,
            "request": self.signed.to_json(),
            "capsule": self.capsule.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> ReencryptBody:
        """Parse a body; raises :class:`MalformedRequest` (also if the capsule digest differs)."""
        if not isinstance(data, Mapping) or data.get("format") != REENCRYPT_FORMAT:
            raise MalformedRequest(f"not a {REENCRYPT_FORMAT} object")
        if set(data) != {"format", "request", "capsule"}:
            raise MalformedRequest("a re-encryption request has exactly: format request capsule")
        signed = _signed(data["request"], FragmentRequest)
        capsule = _hex(data, "capsule", limit=_MAX_CAPSULE)
        if hashlib.sha256(capsule).digest() != signed.request.capsule:
            raise MalformedRequest("the capsule is not the one the signed request names")
        return cls(signed, capsule)


class BackgroundService(Protocol):
    """A service with a background thread: started with its app, stopped with it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def service_lifespan(
    service: BackgroundService,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that starts `service` and stops it (off the event loop)."""

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    return lifespan
