"""The compute node's HTTP API (FastAPI) over a :class:`~datagora.compute.jobs.JobService`.

Consumer endpoints (each read needs a fresh signed ``JobRequest`` by the job's
consumer, sent base64url-encoded in the ``X-Datagora-Request`` header):

- ``POST /jobs`` — body ``{"request": <signed ComputeRequest JSON>, "algorithm":
  <the file's text>, "params": <JSON>}`` → 201 and the job's status; 429 with the
  reason when the dataset or the consumer already has its cap of open jobs;
- ``GET /jobs/{job}`` — status (action ``status``);
- ``GET /jobs/{job}/logs`` — the logs sealed to the consumer (action ``logs``);
- ``GET /jobs/{job}/result`` — the result archive sealed to the consumer
  (action ``result``); its SHA-256 is the on-chain result hash;
- ``POST /jobs/{job}/cancel`` — the consumer withdraws a job that waits for review or
  in the queue (action ``cancel``); the node cancels it on chain, which refunds its
  escrow; 409 once it runs;
- ``POST /jobs/{job}/start`` — the consumer starts a job it submitted held
  (``ComputeRequest.hold``; action ``start``): it joins the queue; 409 unless held;
- ``GET /budget/{dataset}/{consumer}`` — epsilon budget, spent, reserved, left
  (public: the epsilon of every job is on chain anyway);
- ``GET /datasets/{dataset}`` — whether the node computes on the dataset (404 with
  the reason if not), its version, compute service id and DP policy (public: asked
  before ordering, so that nobody pays for a job the node would refuse).

Owner endpoints: ``GET /owner/jobs`` (pending review), ``GET
/owner/jobs/{job}/review`` (the code), ``POST /owner/jobs/{job}/approve``, ``POST
/owner/jobs/{job}/deny`` (``{"reason": ...}``), ``POST /owner/jobs/{job}/cancel`` (a
pending or queued job; its escrow is refunded). Each takes either a fresh
:class:`~datagora.compute.owner.OwnerJobRequest` signed by the on-chain controller
of the job's dataset, in the ``X-Datagora-Request`` header (``list`` then shows
only the signer's datasets' jobs), or the node operator's ``Authorization: Bearer
<owner_token>`` (when the node has one; it sees every job).

Errors are ``{"error": <class>, "detail": <message>}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from datagora.bodies import read_capped, why
from datagora.compute.errors import ComputeError, JobNotFound, JobRefused
from datagora.compute.jobs import (
    MAX_ALGORITHM_BYTES,
    MAX_JOBS_PER_CONSUMER,
    MAX_JOBS_PER_DATASET,
    MAX_PARAMS_BYTES,
    ComputeDataset,
    JobService,
)
from datagora.compute.owner import parse_owner_request
from datagora.compute.policy import OutputPolicy
from datagora.compute.requests import ComputeRequest
from datagora.compute.sandbox import Limits, Sandbox
from datagora.compute.stored import StoredDatasets
from datagora.crypto.eip712 import SignedRequest, signed_request_schema
from datagora.crypto.errors import MalformedRequest
from datagora.crypto.keys import Identity
from datagora.ledger import Ledger

__all__ = ["MAX_DENY_BYTES", "MAX_JOB_BYTES", "REQUEST_HEADER", "create_compute_app"]

REQUEST_HEADER = "X-Datagora-Request"

# Bodies are refused past these sizes before they are read whole. A job body carries the
# algorithm and params (each capped in jobs.py) JSON-encoded, where one byte can take up to
# six characters (\u0001), plus the signed request: a body over this cap could never pass
# the checks behind it. A denial carries a one-line reason.
MAX_JOB_BYTES: Final = 6 * (MAX_ALGORITHM_BYTES + MAX_PARAMS_BYTES) + (64 << 10)
MAX_DENY_BYTES: Final = 64 << 10

# Ids are bounded where they are declared, so an out-of-range one is a 422 that says so
# rather than an overflow in SQLite or a contract call (a 500).
_MAX_ID = 2**63 - 1
JobId = Annotated[int, PathParam(ge=0, le=_MAX_ID, description="A job id.")]
DatasetId = Annotated[int, PathParam(ge=0, le=_MAX_ID, description="A dataset id.")]
Account = Annotated[
    str, PathParam(pattern="^0x[0-9a-fA-F]{40}$", description="An account address (0x + 40 hex).")
]

_Responses = dict[int | str, dict[str, Any]]
_SIGNED_HEADER: Final = (
    "A signed request (datagora.signed-request.v1 JSON), base64url-encoded: a JobRequest "
    "by the job's consumer, or an OwnerJobRequest by the dataset's controller."
)
SignedHeader = Annotated[str | None, Header(description=_SIGNED_HEADER)]
_BAD_HEADER: Final[_Responses] = {
    400: why(f"The {REQUEST_HEADER} header is not a signed request."),
    401: why("No signed request, or a bad, expired or replayed signature."),
}
_CONSUMER: Final[_Responses] = {
    **_BAD_HEADER,
    403: why("The request is not signed by the job's consumer, or not for this action."),
    404: why("No such job on this node."),
    409: why("The job is not in a state that allows this (not finished, already running)."),
}
_OWNER: Final[_Responses] = {
    **_CONSUMER,
    401: why("Neither a signed request by the dataset's controller nor the owner token."),
    403: why("The signer does not control the job's dataset."),
}
_JOB_BODY: Final = {
    "requestBody": {
        "required": True,
        "description": f"At most {MAX_JOB_BYTES} bytes.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "title": "JobSubmission",
                    "required": ["request", "algorithm", "params"],
                    "additionalProperties": False,
                    "properties": {
                        "request": signed_request_schema(ComputeRequest),
                        "algorithm": {
                            "type": "string",
                            "maxLength": MAX_ALGORITHM_BYTES,
                            "description": "The algorithm file's text.",
                        },
                        "params": {"description": "The job's parameters (JSON)."},
                    },
                }
            }
        },
    }
}


def _error(exc: Exception) -> JSONResponse:
    status = 400
    if isinstance(exc, JobRefused):
        status = exc.status
    elif isinstance(exc, JobNotFound):
        status = 404
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)


def _signed(header: str | None) -> SignedRequest[Any]:
    if not header:
        raise JobRefused(f"sign a JobRequest and send it in the {REQUEST_HEADER} header", 401)
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        return SignedRequest.from_json(json.loads(raw))
    except (binascii.Error, ValueError, MalformedRequest) as exc:
        raise JobRefused(
            f"the {REQUEST_HEADER} header is not a signed request: {exc}", 400
        ) from None


def create_compute_app(
    ledger: Ledger,
    operator: Identity,
    datasets: Mapping[int, ComputeDataset | Path | str],
    data_dir: Path,
    *,
    limits: Limits | None = None,
    policy: OutputPolicy | None = None,
    workers: int = 1,
    allow_weak_sandbox: bool = False,
    owner_token: str | None = None,
    sandbox: Sandbox | None = None,
    chain_lock: Any = None,
    stored: StoredDatasets | None = None,
    max_jobs_per_dataset: int = MAX_JOBS_PER_DATASET,
    max_jobs_per_consumer: int = MAX_JOBS_PER_CONSUMER,
) -> FastAPI:
    """The compute role's app; ``app.state.jobs`` is its :class:`JobService`.

    Raises :class:`~datagora.compute.errors.SandboxUnavailable` at start if jobs could
    not run in bubblewrap and ``allow_weak_sandbox`` is false.
    """
    service = JobService(
        ledger,
        operator,
        datasets,
        data_dir,
        sandbox=sandbox,
        limits=limits,
        policy=policy,
        workers=workers,
        allow_weak_sandbox=allow_weak_sandbox,
        chain_lock=chain_lock,
        stored=stored,
        max_jobs_per_dataset=max_jobs_per_dataset,
        max_jobs_per_consumer=max_jobs_per_consumer,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="datagora compute node", lifespan=lifespan)
    app.state.jobs = service

    @app.exception_handler(ComputeError)
    async def _compute_error(request: Request, exc: ComputeError) -> JSONResponse:
        return _error(exc)

    def owner(
        authorization: str | None,
        signed: str | None,
        action: str,
        job: int = 0,
        reason: str = "",
    ) -> str | None:
        """The signing controller (None: the operator's token); refuses anyone else."""
        if signed:
            try:
                raw = base64.urlsafe_b64decode(signed + "=" * (-len(signed) % 4))
                request = parse_owner_request(json.loads(raw))
            except (binascii.Error, ValueError, MalformedRequest) as exc:
                raise JobRefused(f"the {REQUEST_HEADER} header is not valid: {exc}", 400) from None
            return service.authorize_owner(request, action, job, reason)
        if owner_token is None:
            raise JobRefused(
                f"sign an OwnerJobRequest as the dataset's controller ({REQUEST_HEADER} header)",
                401,
            )
        given = (authorization or "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, owner_token.encode()):
            raise JobRefused(
                "owner endpoints need the dataset controller's signed request or the node's "
                "owner token",
                401,
            )
        return None

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "role": "compute",
            "operator": operator.address,
            "datasets": sorted(service.datasets),
            "stored_datasets": service.stored is not None,
            "isolation": service.sandbox.isolation.value,
            **service.sandbox.describe(),
        }

    @app.post(
        "/jobs",
        status_code=201,
        openapi_extra=_JOB_BODY,
        responses={
            400: why("The body is not the documented JSON, or the signed request is malformed."),
            401: why("The signature is bad, expired or replayed."),
            403: why("The ledger or the node refuses the job (no order, policy, budget)."),
            404: why("This node does not compute on that dataset."),
            409: why("The order was already used for a job."),
            413: why(
                f"The body is larger than {MAX_JOB_BYTES} bytes (refused before it "
                "is read), or the algorithm or params are over their caps."
            ),
            429: why("The dataset or the consumer already has its cap of open jobs."),
            503: why("The chain cannot be read now."),
        },
    )
    async def submit(request: Request) -> dict[str, Any]:
        raw = await read_capped(request, MAX_JOB_BYTES)
        if raw is None:
            raise JobRefused(f"the body is larger than {MAX_JOB_BYTES} bytes", 413)
        try:
            body = json.loads(raw)
        except ValueError:
            raise JobRefused("the body must be JSON", 400) from None
        if not isinstance(body, dict) or set(body) != {"request", "algorithm", "params"}:
            raise JobRefused('the body is {"request", "algorithm", "params"}', 400)
        if not isinstance(body["algorithm"], str):
            raise JobRefused("algorithm is the file's text", 400)
        try:
            signed = SignedRequest.from_json(body["request"])
        except MalformedRequest as exc:
            raise JobRefused(str(exc), 400) from None
        # The worker runs in threads; admission talks to the chain: keep it off the loop.
        from starlette.concurrency import run_in_threadpool

        info = await run_in_threadpool(
            service.submit, signed, body["algorithm"].encode(), body["params"]
        )
        return info.to_json()

    @app.get("/jobs/{job}", responses=_CONSUMER)
    def status(job: JobId, x_datagora_request: SignedHeader = None) -> dict[str, Any]:
        return service.authorize(_signed(x_datagora_request), job, "status").to_json()

    @app.get("/jobs/{job}/logs", responses=_CONSUMER)
    def logs(job: JobId, x_datagora_request: SignedHeader = None) -> Response:
        service.authorize(_signed(x_datagora_request), job, "logs")
        return Response(service.sealed(job, "logs"), media_type="application/octet-stream")

    @app.get("/jobs/{job}/result", responses=_CONSUMER)
    def result(job: JobId, x_datagora_request: SignedHeader = None) -> Response:
        info = service.authorize(_signed(x_datagora_request), job, "result")
        return Response(
            service.sealed(job, "result"),
            media_type="application/octet-stream",
            headers={"X-Datagora-Result-Hash": info.result_hash},
        )

    @app.post("/jobs/{job}/cancel", responses=_CONSUMER)
    def consumer_cancel(job: JobId, x_datagora_request: SignedHeader = None) -> dict[str, Any]:
        service.authorize(_signed(x_datagora_request), job, "cancel")
        return service.cancel(job, "the consumer").to_json()

    @app.post("/jobs/{job}/start", responses=_CONSUMER)
    def consumer_start(job: JobId, x_datagora_request: SignedHeader = None) -> dict[str, Any]:
        service.authorize(_signed(x_datagora_request), job, "start")
        return service.start(job).to_json()

    @app.get("/datasets/{dataset}", responses={404: why("This node does not compute on it.")})
    def describe(dataset: DatasetId) -> dict[str, Any]:
        return service.describe(dataset)

    @app.get(
        "/budget/{dataset}/{consumer}",
        responses={404: why("This node does not compute on that dataset.")},
    )
    def budget(dataset: DatasetId, consumer: Account) -> dict[str, Any]:
        return service.budget(dataset, consumer)

    @app.get("/owner/jobs", responses=_OWNER)
    def owner_pending(
        authorization: str | None = Header(None), x_datagora_request: SignedHeader = None
    ) -> list[dict[str, Any]]:
        controller = owner(authorization, x_datagora_request, "list")
        return [j.to_json() for j in service.pending(controller)]

    @app.get("/owner/jobs/{job}/review", responses=_OWNER)
    def owner_review(
        job: JobId,
        authorization: str | None = Header(None),
        x_datagora_request: SignedHeader = None,
    ) -> dict[str, Any]:
        owner(authorization, x_datagora_request, "review", job)
        review = service.review(job)
        return {
            "job": review.job.to_json(),
            "code": review.code,
            "params": review.params,
            "differential_privacy": review.differential_privacy,
        }

    @app.post("/owner/jobs/{job}/approve", responses=_OWNER)
    def owner_approve(
        job: JobId,
        authorization: str | None = Header(None),
        x_datagora_request: SignedHeader = None,
    ) -> dict[str, Any]:
        owner(authorization, x_datagora_request, "approve", job)
        return service.approve(job).to_json()

    @app.post("/owner/jobs/{job}/cancel", responses=_OWNER)
    def owner_cancel(
        job: JobId,
        authorization: str | None = Header(None),
        x_datagora_request: SignedHeader = None,
    ) -> dict[str, Any]:
        owner(authorization, x_datagora_request, "cancel", job)
        return service.cancel(job, "the owner").to_json()

    @app.post(
        "/owner/jobs/{job}/deny",
        responses={**_OWNER, 413: why(f"The body is larger than {MAX_DENY_BYTES} bytes.")},
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"reason": {"type": "string", "maxLength": 256}},
                        }
                    }
                },
            }
        },
    )
    async def owner_deny(
        job: JobId,
        request: Request,
        authorization: str | None = Header(None),
        x_datagora_request: SignedHeader = None,
    ) -> dict[str, Any]:
        raw = await read_capped(request, MAX_DENY_BYTES)
        if raw is None:
            raise JobRefused(f"the body is larger than {MAX_DENY_BYTES} bytes", 413)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(owner, authorization, x_datagora_request, "deny", job, reason)
        info = await run_in_threadpool(service.deny, job, reason)
        return info.to_json()

    return app
