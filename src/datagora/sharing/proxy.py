"""The proxy role: stores key fragments and re-encrypts capsules for consumers the ledger allows.

``PUT /kfrags``      a ``datagora.kfrag-delivery.v2`` body (see :mod:`datagora.sharing.wire`):
                     a DelegationRequest addressed to this proxy, signed by the dataset's
                     controller or an agent key it authorised on chain, carrying one key
                     fragment sealed to this proxy's Umbral key; stored durably, the
                     first delivery of a batch kept.
``POST /reencrypt``  a ``datagora.reencrypt-request.v1`` body: a FragmentRequest signed by
                     the consumer and the capsule; for every request the ledger is read
                     (:class:`~datagora.sharing.gate.AccessGate`; fragments are made
                     meanwhile and sent only if it allows); answers
                     ``{"cfrags": [{"batch": hex, "cfrag": hex}, …]}``, one capsule
                     fragment per fragment batch held for the consumer, newest first.
                     Idempotent: the same signed request is answered every time it comes
                     (and checked against the ledger every time).
``GET /identity``    the proxy's address and Umbral public key (what agents seal
                     fragments to), signed by its account over the asker's
                     ``?challenge=`` (32 bytes hex): ``datagora.proxy-identity.v2``.
``GET /log``         the access log (JSON lines, hash-chained; see
                     :mod:`datagora.sharing.accesslog`), a page at a time:
                     ``?offset=N&limit=M`` (at most :data:`MAX_LOG_PAGE` entries).
``GET /health``      the proxy's address, chain, fragment count and log/anchor heads.

Every refusal is ``{"error": code, "detail": one line}`` with a 4xx status: 413
a body over 64 KiB (refused before it is read), 422 malformed, 401
bad/expired/replayed signature, 403 refused by the ledger (or not the controller),
404 no fragment for this consumer (said only to a consumer the ledger allows). A
proxy never holds anything that opens a data key: fragments alone are useless
without ``threshold`` of them *and* the consumer's secret key.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from coincurve import PrivateKey
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from datagora.bodies import read_capped, why
from datagora.crypto.eip712 import signed_request_schema, verify_request
from datagora.crypto.errors import (
    ExpiryTooFar,
    MalformedRequest,
    PreError,
    ReplayedRequest,
    RequestRefused,
    SignatureExpired,
    UnexpectedRequestType,
)
from datagora.crypto.keys import Identity
from datagora.crypto.nonces import FileNonceStore
from datagora.crypto.pre import open_kfrag, reencrypt, verify_kfrag
from datagora.errors import DatagoraError
from datagora.ledger import Ledger
from datagora.ledger.base import ZERO_ADDRESS
from datagora.ledger.errors import ChainError
from datagora.sharing.accesslog import AccessLogFile
from datagora.sharing.answers import answer_digest, identity_digest, sign_answer
from datagora.sharing.gate import DEFAULT_SERVICE_ID, AccessGate, Decision
from datagora.sharing.kfrags import KfragRecord, KfragStore
from datagora.sharing.requests import DelegationRequest, FragmentRequest
from datagora.sharing.wire import (
    DELIVERY_FORMAT,
    REENCRYPT_FORMAT,
    Domain,
    KfragDelivery,
    ReencryptBody,
    service_lifespan,
)

__all__ = ["PROXY_IDENTITY_FORMAT", "ProxyService", "create_proxy_app", "outermost"]

_log = logging.getLogger(__name__)
_MAX_BODY: Final = 64 * 1024
PROXY_IDENTITY_FORMAT: Final = "datagora.proxy-identity.v2"
MAX_LOG_PAGE: Final = 10_000
"""The most access-log entries one ``GET /log`` returns (page with ``offset``)."""
Answer = tuple[int, dict[str, Any]]
_YIELDS_TO_SEND: Final = 3
"""Event-loop turns a fragment request gives its ledger check before re-encrypting:
enough for the check's read to reach the socket (its task, then the batch sender)."""


def _refusal(status: int, code: str, detail: str) -> Answer:
    return status, {"error": code, "detail": detail}


def _too_large() -> Answer:
    return _refusal(413, "too_large", f"the body is larger than {_MAX_BODY} bytes")


def _signature_refusal(exc: RequestRefused) -> Answer:
    if isinstance(exc, MalformedRequest | UnexpectedRequestType):
        return _refusal(422, "malformed", str(exc))
    if isinstance(exc, SignatureExpired | ExpiryTooFar):
        return _refusal(401, "expired_signature", str(exc))
    if isinstance(exc, ReplayedRequest):
        return _refusal(401, "replayed", "this signed request was already used: sign a fresh one")
    return _refusal(401, "bad_signature", str(exc))


def _parse(raw: bytes) -> Any:
    if len(raw) > _MAX_BODY:
        raise MalformedRequest(f"the body is larger than {_MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise MalformedRequest("the body is not JSON") from None


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A re-encryption request whose body and signature passed."""

    body: ReencryptBody
    request: FragmentRequest
    signer: str
    entry: dict[str, Any]


class ProxyService:
    """What a proxy does, without HTTP: every method returns ``(status, JSON body)``."""

    def __init__(
        self,
        ledger: Ledger,
        identity: Identity,
        data_dir: Path,
        *,
        anchor_every: float = 60.0,
        service_id: int = DEFAULT_SERVICE_ID,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = ledger
        self.identity = identity
        self.chain_id = ledger.chain.chain_id
        self.domain = Domain.of(ledger)
        self._answer_key = PrivateKey(bytes(identity.account.key))  # made once: see sign_answer
        self._faults = ledger.deployment.contracts.get("ProxyFaults", ZERO_ADDRESS)
        self.service_id = service_id
        self.anchor_every = anchor_every
        self.gate = AccessGate(ledger, service_id)
        self.kfrags = KfragStore(data_dir / "kfrags.sqlite")
        # The nonces of deliveries (fragment requests are idempotent and use none),
        # synced before a delivery is acted on.
        self.nonces = FileNonceStore(
            data_dir / "nonces.log", defer_sync=True, legacy_sqlite=data_dir / "nonces.sqlite"
        )
        self.log = AccessLogFile(data_dir / "access-log.jsonl")
        self._anchored = ledger.access_log.latest(identity.address).entries
        self._anchor_lock = threading.Lock()
        # One process of a proxy anchors (several share the log with --workers): the
        # one holding this file's lock; another takes over if it dies.
        self._anchor_file = os.open(data_dir / "anchor.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._anchorer = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ requests

    def store_kfrag(self, raw: bytes) -> Answer:
        try:
            delivery = KfragDelivery.from_json(_parse(raw))
        except MalformedRequest as exc:
            return _refusal(422, "malformed", str(exc))
        # Check the commitment and the address before the signature, so an altered or
        # misdirected body burns no nonce.
        if not delivery.commitment_holds():
            return _refusal(401, "bad_signature", "the key fragment is not the one that was signed")
        if delivery.signed.request.proxy != self.identity.address:
            return _refusal(
                403,
                "wrong_proxy",
                f"this delivery is addressed to {delivery.signed.request.proxy}, not to this "
                f"proxy ({self.identity.address})",
            )
        try:
            checked = verify_request(
                delivery.signed,
                self.domain.chain_id,
                int(time.time()),
                self.nonces,
                expect=DelegationRequest,
                verifying_contract=self.domain.verifying_contract,
            )
        except RequestRefused as exc:
            return _signature_refusal(exc)
        self.nonces.sync()  # the nonce is on disk before anything acts on the request
        req = checked.request
        entry = {
            "event": "delegation",
            "account": checked.signer,
            "consumer": req.consumer,
            "dataset": str(req.dataset),
            "version": req.version,
            "request": checked.digest.hex(),
        }
        try:
            controller = self.ledger.data_nft.controller(req.dataset)
            allowed = controller == checked.signer or (
                controller != ZERO_ADDRESS
                and self.ledger.access.is_delegate(controller, checked.signer)
            )
        except DatagoraError:
            controller, allowed = "", False
        if not allowed:
            self.log.append(**entry, outcome="refused", reason="not_controller")
            return _refusal(
                403,
                "not_controller",
                f"{checked.signer} neither controls dataset {req.dataset} nor is an agent "
                "its controller authorised",
            )
        try:
            kfrag = open_kfrag(
                self.identity.umbral_secret_key(), delivery.capsule, delivery.ciphertext
            )
            verified = verify_kfrag(
                kfrag, delivery.verifying_key, delivery.delegating_key, req.consumer_key
            )
        except PreError as exc:
            self.log.append(**entry, outcome="refused", reason="bad_kfrag")
            return _refusal(422, "bad_kfrag", str(exc))
        record = KfragRecord(
            dataset=req.dataset,
            version=req.version,
            consumer=req.consumer,
            consumer_key=req.consumer_key,
            kfrag=kfrag,
            verifying_key=delivery.verifying_key,
            delegating_key=delivery.delegating_key,
            owner=checked.signer,
            grant=req.grant,
            threshold=req.threshold,
            shares=req.shares,
            batch=req.batch,
            stored_at=int(time.time()),
        )
        if not self.kfrags.put(record, verified):
            self.log.append(**entry, outcome="refused", reason="batch_exists")
            return _refusal(
                409,
                "batch_exists",
                "this proxy already holds another fragment of this batch: the first "
                "delivery stays (delegate again with a new batch)",
            )
        self.log.append(**entry, outcome="accepted", reason="")
        return 200, {"stored": True}

    def reencrypt(self, raw: bytes) -> Answer:
        admitted = self._admit(raw)
        if not isinstance(admitted, _Admitted):
            return admitted
        try:
            decision = self.gate.check(admitted.request.dataset, admitted.signer)
        except ChainError:
            return _refusal(503, "chain_unavailable", "the proxy cannot read the ledger now")
        if not decision.allowed:
            return self._serve(admitted, decision, None)
        return self._serve(admitted, decision, self._answers(admitted))

    async def reencrypt_async(self, raw: bytes) -> Answer:
        """:meth:`reencrypt` on the event loop: the ledger reads of concurrent requests
        share a JSON-RPC batch, and while this request's reads are in flight its
        capsule fragments are made and signed (CPU work that would otherwise wait
        for the chain); they leave the proxy only if the ledger allows it."""
        admitted = self._admit(raw)
        if not isinstance(admitted, _Admitted):
            return admitted
        check = asyncio.ensure_future(
            self.gate.check_async(admitted.request.dataset, admitted.signer)
        )
        for _ in range(_YIELDS_TO_SEND):
            await asyncio.sleep(0)  # let the check send its reads before the CPU work
        try:
            answers = self._answers(admitted)
        except BaseException:
            check.cancel()
            raise
        try:
            decision = await check
        except ChainError:
            return _refusal(503, "chain_unavailable", "the proxy cannot read the ledger now")
        return self._serve(admitted, decision, answers)

    def _admit(self, raw: bytes) -> _Admitted | Answer:
        try:
            body = ReencryptBody.from_json(_parse(raw))
            # No nonce: a fragment request is idempotent (see FragmentRequest).
            checked = verify_request(
                body.signed,
                self.domain.chain_id,
                int(time.time()),
                None,
                expect=FragmentRequest,
                verifying_contract=self.domain.verifying_contract,
            )
        except RequestRefused as exc:
            return _signature_refusal(exc)
        req = checked.request
        if req.service != self.service_id:
            return _refusal(
                403,
                "wrong_service",
                f"this proxy serves datatoken service {self.service_id}, not {req.service}",
            )
        entry = {
            "event": "reencrypt",
            "account": checked.signer,
            "dataset": str(req.dataset),
            "version": req.version,
            "capsule": req.capsule.hex(),
            "request": checked.digest.hex(),
        }
        return _Admitted(body, req, checked.signer, entry)

    def _answers(self, admitted: _Admitted) -> list[dict[str, str]] | str:
        """The signed capsule fragments for ``admitted``, one per batch held, or why
        there are none (``no_kfrag``, ``malformed``): nothing is logged or sent here."""
        req, signer = admitted.request, admitted.signer
        records = self.kfrags.get(req.dataset, req.version, signer)
        if not records:
            return "no_kfrag"
        try:
            raw_cfrags = [
                (r.batch, reencrypt(self.kfrags.verified(r), admitted.body.capsule))
                for r in records
            ]
        except PreError:
            return "malformed"
        # Each fragment signed (docs/sharing.md, "Signed answers"): evidence against
        # this proxy if it does not verify.
        request_digest = bytes.fromhex(admitted.entry["request"])
        return [
            {
                "batch": batch.hex(),
                "cfrag": cfrag.hex(),
                "signature": sign_answer(
                    self._answer_key,
                    answer_digest(
                        self.chain_id, self._faults, req.dataset, req.version, signer,
                        request_digest, cfrag,
                    ),
                ).hex(),
            }
            for batch, cfrag in raw_cfrags
        ]  # fmt: skip

    def _serve(
        self,
        admitted: _Admitted,
        decision: Decision,
        answers: list[dict[str, str]] | str | None,
    ) -> Answer:
        """The answer to ``admitted`` under the ledger's ``decision``: a refusal first
        (nothing of ``answers`` is sent), then the fragments or why there are none."""
        entry, req, signer = admitted.entry, admitted.request, admitted.signer
        if not decision.allowed:
            self.log.append(**entry, outcome="refused", reason=decision.code)
            return _refusal(403, decision.code, decision.detail)
        if answers == "no_kfrag":
            self.log.append(**entry, outcome="refused", reason="no_kfrag")
            return _refusal(
                404,
                "no_kfrag",
                f"this proxy holds no key fragment for {signer} on dataset "
                f"{req.dataset} version {req.version}",
            )
        if not isinstance(answers, list):
            self.log.append(**entry, outcome="refused", reason="malformed")
            return _refusal(422, "malformed", "the capsule is malformed")
        self.log.append(**entry, outcome="accepted", reason="")
        return 200, {"cfrags": answers}

    def _anchored_entries(self) -> int:
        if self._anchorer:
            return self._anchored
        try:  # another process anchors: the chain knows
            return self.ledger.access_log.latest(self.identity.address).entries
        except DatagoraError:
            return self._anchored

    def public_identity(self, challenge: bytes = bytes(32)) -> dict[str, Any]:
        """What an agent needs to address and seal fragments to this proxy, signed by
        the proxy's account over the asker's 32-byte ``challenge``."""
        umbral_key = self.identity.umbral_public_key
        digest = identity_digest(
            self.domain.chain_id, self.domain.verifying_contract, self.identity.address,
            umbral_key, self.service_id, challenge,
        )  # fmt: skip
        return {
            "format": PROXY_IDENTITY_FORMAT,
            "address": self.identity.address,
            "umbral_public_key": umbral_key.hex(),
            "chain_id": self.domain.chain_id,
            "verifying_contract": self.domain.verifying_contract,
            "service": self.service_id,
            "challenge": challenge.hex(),
            "signature": sign_answer(self._answer_key, digest).hex(),
        }

    def health(self) -> dict[str, Any]:
        entries, digest = self.log.head
        return {
            "role": "proxy",
            "address": self.identity.address,
            "umbral_public_key": self.identity.umbral_public_key.hex(),
            "chain_id": self.chain_id,
            "kfrags": self.kfrags.count(),
            "log_entries": entries,
            "log_digest": digest.hex(),
            "anchored_entries": self._anchored_entries(),
        }

    # ------------------------------------------------------------ anchoring

    def _is_anchorer(self) -> bool:
        if not self._anchorer:
            try:
                fcntl.flock(self._anchor_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self._anchorer = True
            # Whoever anchored before may have got further than this process knows.
            self._anchored = self.ledger.access_log.latest(self.identity.address).entries
        return True

    def anchor_now(self) -> int:
        """Anchor the log's durable head if it grew; returns the entries anchored so far
        (only the proxy process holding the anchor lock anchors; the others return)."""
        with self._anchor_lock:
            if not self._is_anchorer():
                return self._anchored
            entries, digest = self.log.sync()
            if entries > self._anchored:
                self.ledger.access_log.anchor(self.identity.account, digest, entries)
                self._anchored = entries
            return self._anchored

    def _anchor_loop(self) -> None:
        while not self._stop.wait(self.anchor_every):
            try:
                self.anchor_now()
            except DatagoraError as exc:
                # The chain may be down for a while; the next round retries.
                _log.warning("anchoring the access log failed: %s", exc)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._anchor_loop, name="anchor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.anchor_now()
        except DatagoraError as exc:
            _log.warning("final anchor of the access log failed: %s", exc)
        self.kfrags.close()
        self.nonces.close()
        self.log.close()
        os.close(self._anchor_file)


class _ReencryptFastPath:
    """ASGI middleware answering ``POST /reencrypt`` itself: the proxy's hot path.

    FastAPI's routing, dependency solving and response classes cost about as much
    CPU per request as verifying its signature; this answers exactly as the route
    declared below would (same status codes and bodies, the body capped at
    :data:`_MAX_BODY` bytes while it is read), and hands every other request on.
    """

    def __init__(self, app: Any, service: ProxyService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path != "/reencrypt":
            await self.app(scope, receive, send)
            return
        status, payload = await self._answer(scope, receive)
        if status == 0:
            return  # the client left
        body = json.dumps(payload, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Any, receive: Any) -> Answer:
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > _MAX_BODY:
            return _too_large()  # refused before a byte of the body is read
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0, {}
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                return _too_large()  # the rest is never read
            chunks.append(chunk)
            more = message.get("more_body", False)
        try:
            return await self.service.reencrypt_async(b"".join(chunks))
        except Exception:
            _log.exception("re-encryption failed")
            return 500, {"error": "internal", "detail": "internal error"}


def outermost(app: Any) -> Any:
    """``app`` for serving at the top level: a proxy app's ``POST /reencrypt`` is then
    answered before FastAPI's own middleware (error, telemetry and body-limit layers,
    about 11 us a request); any other app is returned as it is."""
    service = getattr(getattr(app, "state", None), "proxy", None)
    return _ReencryptFastPath(app, service) if isinstance(service, ProxyService) else app


def _hex_field(low: int, high: int) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^([0-9a-f]{{2}}){{{low},{high}}}$"}


def _json_body(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": text,
            "content": {"application/json": {"schema": schema}},
        }
    }


_DELIVERY_BODY: Final = _json_body(
    {
        "type": "object",
        "title": "KfragDelivery",
        "required": [
            "format",
            "request",
            "kfrag_capsule",
            "kfrag_ciphertext",
            "verifying_key",
            "delegating_key",
            "salt",
        ],
        "additionalProperties": False,
        "properties": {
            "format": {"const": DELIVERY_FORMAT},
            "request": signed_request_schema(DelegationRequest),
            "kfrag_capsule": _hex_field(1, 1024),
            "kfrag_ciphertext": _hex_field(1, 1024),
            "verifying_key": _hex_field(33, 33),
            "delegating_key": _hex_field(33, 33),
            "salt": _hex_field(32, 32),
        },
    },
    f"A {DELIVERY_FORMAT} body (docs/sharing.md), at most {_MAX_BODY} bytes.",
)
_REENCRYPT_BODY: Final = _json_body(
    {
        "type": "object",
        "title": "ReencryptRequest",
        "required": ["format", "request", "capsule"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": REENCRYPT_FORMAT},
            "request": signed_request_schema(FragmentRequest),
            "capsule": _hex_field(1, 1024),
        },
    },
    f"A {REENCRYPT_FORMAT} body (docs/sharing.md), at most {_MAX_BODY} bytes.",
)
_SIGNED_REFUSALS: Final[dict[int | str, dict[str, Any]]] = {
    401: why("The signature is bad, expired, too far in the future or replayed."),
    413: why(f"The body is larger than {_MAX_BODY} bytes (refused before it is read)."),
    422: why("The body is not JSON or not the documented format."),
}


def create_proxy_app(
    ledger: Ledger,
    identity: Identity,
    data_dir: Path,
    anchor_every: float = 60.0,
    *,
    service_id: int = DEFAULT_SERVICE_ID,
) -> FastAPI:
    """The proxy's HTTP app; ``identity`` is the proxy's own account (it pays for anchors).

    Data (``kfrags.sqlite``, ``nonces.log``, ``access-log.jsonl``) lives in
    ``data_dir``; the log is anchored on chain every ``anchor_every`` seconds when
    it has grown, and once more at shutdown.
    """
    service = ProxyService(
        ledger, identity, data_dir, anchor_every=anchor_every, service_id=service_id
    )

    app = FastAPI(title="datagora proxy", lifespan=service_lifespan(service))
    app.state.proxy = service
    app.add_middleware(_ReencryptFastPath, service=service)

    @app.put(
        "/kfrags",
        summary="Store a key fragment delegated to this proxy",
        openapi_extra=_DELIVERY_BODY,
        responses={
            200: {"description": 'Stored: `{"stored": true}`.'},
            **_SIGNED_REFUSALS,
            403: why(
                "Addressed to another proxy, or signed by neither the dataset's "
                "controller nor an agent it authorised."
            ),
            409: why("This proxy already holds another fragment of this batch."),
            422: why("Malformed body, or a key fragment that does not open or verify."),
        },
    )
    async def put_kfrags(request: Request) -> JSONResponse:
        raw = await read_capped(request, _MAX_BODY)
        if raw is None:
            status, payload = _too_large()
        else:
            status, payload = await run_in_threadpool(service.store_kfrag, raw)
        return JSONResponse(payload, status_code=status)

    # Served by _ReencryptFastPath; declared here for the OpenAPI document.
    @app.post(
        "/reencrypt",
        summary="Re-encrypt a capsule for a consumer the ledger allows",
        openapi_extra=_REENCRYPT_BODY,
        responses={
            200: {"description": "One capsule fragment per fragment batch held, newest first."},
            **_SIGNED_REFUSALS,
            403: why(
                "The ledger refuses this consumer (no order, expired, revoked), or "
                "the request is for another datatoken service."
            ),
            404: why("No key fragment for this consumer, dataset and version."),
            503: why("The proxy cannot read the ledger now."),
        },
    )
    async def post_reencrypt(request: Request) -> JSONResponse:
        raw = await read_capped(request, _MAX_BODY)
        status, payload = _too_large() if raw is None else await service.reencrypt_async(raw)
        return JSONResponse(payload, status_code=status)

    @app.get(
        "/log",
        response_class=Response,
        responses={
            200: {
                "description": "JSON lines, one access-log entry each (hash-chained).",
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            }
        },
    )
    def get_log(
        offset: Annotated[
            int, Query(ge=0, le=2**63 - 1, description="Entries to skip (the first is 0).")
        ] = 0,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LOG_PAGE, description="Entries to return at most.")
        ] = MAX_LOG_PAGE,
    ) -> Response:
        """A page of the access log: JSON lines from entry `offset` (seq = offset + 1)."""
        lines = service.log.read_lines(offset, limit)
        return Response(b"".join(lines), media_type="application/x-ndjson")

    @app.get("/health")
    def get_health() -> dict[str, Any]:
        return service.health()

    @app.get("/identity", responses={422: why("The challenge is not 32 bytes of hex.")})
    def get_identity(
        challenge: Annotated[
            str,
            Query(
                pattern="^[0-9a-f]{64}$",
                description="32 random bytes (hex) the answer's signature covers.",
            ),
        ] = "00" * 32,
    ) -> dict[str, Any]:
        """The proxy's address and Umbral public key (fragments are sealed to it), signed
        by its account over `challenge` (docs/sharing.md)."""
        return service.public_identity(bytes.fromhex(challenge))

    return app
