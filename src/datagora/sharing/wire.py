"""The JSON bodies exchanged with proxies (formats written down in ``docs/sharing.md``).

``datagora.kfrag-delivery.v2`` — owner or its agent → one proxy, ``PUT /kfrags``: a
signed :class:`~datagora.sharing.requests.DelegationRequest` addressed to that proxy,
plus one key fragment *sealed to the proxy's Umbral key* (an Umbral capsule and
ciphertext) and the owner's public verifying and delegating keys. The delegation
request has no field for the fragment, so its ``nonce`` *commits* to it: ``nonce =
SHA-256(label ‖ salt ‖ capsule ‖ ciphertext ‖ verifying_key ‖ delegating_key)`` with a
fresh random 32-byte ``salt`` sent alongside. The nonce stays unique per request (the
salt is random) and the signature covers the sealed fragment, so nobody on the way can
swap it, and no other proxy can use it.

``datagora.reencrypt-request.v1`` — consumer → proxy, ``POST /reencrypt``: a
signed :class:`~datagora.sharing.requests.FragmentRequest` plus the capsule bytes, whose
SHA-256 must be the request's ``capsule`` field.

Every request here is signed under the domain ``{name: "datagora", version: "1",
chainId, verifyingContract: the deployment's AccessRegistry}`` (:class:`Domain`), so it
is valid on one deployment only.
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
from datagora.crypto.pre import seal_kfrag
from datagora.ledger import Ledger
from datagora.sharing.requests import DelegationRequest, FragmentRequest

__all__ = [
    "DELIVERY_FORMAT",
    "REENCRYPT_FORMAT",
    "REQUEST_LIFETIME_S",
    "Domain",
    "KfragDelivery",
    "ReencryptBody",
    "delivery_nonce",
]

DELIVERY_FORMAT: Final = "datagora.kfrag-delivery.v2"
REENCRYPT_FORMAT: Final = "datagora.reencrypt-request.v1"
REQUEST_LIFETIME_S: Final = 120
"""How long the requests made here stay valid (services accept at most 600 s)."""
_DELIVERY_LABEL: Final = b"datagora/kfrag-delivery/v2"
_MAX_KFRAG: Final = 1024
_MAX_CAPSULE: Final = 1024


@dataclass(frozen=True, slots=True)
class Domain:
    """The EIP-712 domain of a deployment's sharing requests: its chain and contract."""

    chain_id: int
    verifying_contract: str

    @classmethod
    def of(cls, ledger: Ledger) -> Domain:
        """The domain of ``ledger``'s deployment (its AccessRegistry is the contract)."""
        return cls(ledger.chain.chain_id, ledger.access.address)


def delivery_nonce(
    salt: bytes, capsule: bytes, ciphertext: bytes, verifying_key: bytes, delegating_key: bytes
) -> bytes:
    """The nonce of a delegation request that commits to the sealed fragment it delivers."""
    return hashlib.sha256(
        _DELIVERY_LABEL
        + salt
        + len(capsule).to_bytes(2, "big")
        + capsule
        + len(ciphertext).to_bytes(2, "big")
        + ciphertext
        + verifying_key
        + delegating_key
    ).digest()


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
    """One key fragment sealed to one proxy, with the signed delegation addressed to it."""

    signed: SignedRequest[DelegationRequest]
    capsule: bytes
    ciphertext: bytes
    verifying_key: bytes
    delegating_key: bytes
    salt: bytes

    @classmethod
    def build(
        cls,
        signer: Identity,
        domain: Domain,
        *,
        proxy: str,
        proxy_key: bytes,
        verifying_key: bytes,
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
        """Seal ``kfrag`` to ``proxy_key`` and sign its delivery to ``proxy`` (valid
        :data:`REQUEST_LIFETIME_S` seconds); ``verifying_key`` is the owner's."""
        salt = os.urandom(32)
        capsule, ciphertext = seal_kfrag(kfrag, proxy_key)
        nonce = delivery_nonce(salt, capsule, ciphertext, verifying_key, delegating_key)
        request = DelegationRequest(
            delegator=signer.address,
            proxy=proxy,
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
        signed = sign_request(
            signer, request, domain.chain_id, verifying_contract=domain.verifying_contract
        )
        return cls(signed, capsule, ciphertext, verifying_key, delegating_key, salt)

    def commitment_holds(self) -> bool:
        """True if the signed nonce commits to this sealed fragment and these keys."""
        expected = delivery_nonce(
            self.salt, self.capsule, self.ciphertext, self.verifying_key, self.delegating_key
        )
        return expected == self.signed.request.nonce

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DELIVERY_FORMAT,
            "request": self.signed.to_json(),
            "kfrag_capsule": self.capsule.hex(),
            "kfrag_ciphertext": self.ciphertext.hex(),
            "verifying_key": self.verifying_key.hex(),
            "delegating_key": self.delegating_key.hex(),
            "salt": self.salt.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> KfragDelivery:
        """Parse a delivery; raises :class:`MalformedRequest`."""
        fields = {
            "format", "request", "kfrag_capsule", "kfrag_ciphertext", "verifying_key",
            "delegating_key", "salt",
        }  # fmt: skip
        if not isinstance(data, Mapping) or data.get("format") != DELIVERY_FORMAT:
            raise MalformedRequest(f"not a {DELIVERY_FORMAT} object")
        if set(data) != fields:
            raise MalformedRequest("a kfrag delivery has exactly: " + " ".join(sorted(fields)))
        return cls(
            _signed(data["request"], DelegationRequest),
            _hex(data, "kfrag_capsule", limit=_MAX_CAPSULE),
            _hex(data, "kfrag_ciphertext", limit=_MAX_KFRAG),
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
        cls,
        consumer: Identity,
        domain: Domain,
        dataset: int,
        version: int,
        capsule: bytes,
        *,
        service: int = 0,
    ) -> ReencryptBody:
        """Sign a request for ``capsule`` (valid :data:`REQUEST_LIFETIME_S` seconds)."""
        request = FragmentRequest(
            consumer=consumer.address,
            dataset=dataset,
            version=version,
            service=service,
            capsule=hashlib.sha256(capsule).digest(),
            nonce=new_nonce(),
            expires=int(time.time()) + REQUEST_LIFETIME_S,
        )
        signed = sign_request(
            consumer, request, domain.chain_id, verifying_contract=domain.verifying_contract
        )
        return cls(signed, capsule)

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
