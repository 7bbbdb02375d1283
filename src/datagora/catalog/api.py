"""The catalog's HTTP API (`datagora node --roles catalog`): search, details, metadata."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from datagora.bodies import read_capped
from datagora.catalog import db as t
from datagora.catalog.db import Database
from datagora.catalog.errors import SearchError
from datagora.catalog.indexer import Indexer
from datagora.catalog.search import MAX_ID, SearchQuery, dataset_details, search
from datagora.catalog.supervisor import Supervisor
from datagora.storage.errors import MetadataError
from datagora.storage.metadata import MAX_METADATA_BYTES


class Refusal(BaseModel):
    """Why a request was refused: a sentence, or FastAPI's list of invalid fields."""

    detail: str | list[dict[str, Any]]


def _why(text: str) -> dict[str, Any]:
    return {"description": text, "model": Refusal}


_INVALID: dict[int | str, dict[str, Any]] = {
    422: _why("A parameter or the body is invalid; `detail` says which and why.")
}
_SHA256 = "^[0-9a-f]{64}$"


def erc721_metadata(details: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The ERC-721 metadata JSON schema (name, description, external_url, attributes)
    of one dataset, from the catalog's details; hashes and addresses as properties."""
    meta = details.get("metadata") or {}
    dataset = int(details["id"])
    title = str(meta.get("title") or details.get("title") or f"datagora dataset #{dataset}")
    attributes = [
        {"trait_type": name, "value": value}
        for name, value in (
            ("license", meta.get("license") or details.get("license")),
            ("pricing", details.get("pricing")),
            ("version", details.get("version")),
            ("orders", details.get("orders")),
        )
        if value is not None
    ]
    attributes += [{"trait_type": "tag", "value": tag} for tag in meta.get("tags") or []]
    return {
        "name": title,
        "description": str(meta.get("description") or ""),
        "external_url": f"{base_url}/datasets/{dataset}",
        "attributes": attributes,
        "properties": {
            key: details.get(key)
            for key in (
                "owner",
                "datatoken",
                "metadata_hash",
                "metadata_uri",
                "manifest_hash",
                "merkle_root",
            )
        },
    }


def create_catalog_app(
    indexer: Indexer,
    poll_interval: float = 0.1,
    *,
    retry_every: float = 1.0,
    stall_after: float = 120.0,
) -> FastAPI:
    """An app serving `indexer`'s database, with the indexer running in the background
    under a :class:`~datagora.catalog.supervisor.Supervisor` (pending metadata is
    fetched again every `retry_every` seconds, with back-off per document)."""
    database: Database = indexer.db
    supervisor = Supervisor(
        indexer, poll_interval, retry_every=retry_every, stall_after=stall_after
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        supervisor.start()
        try:
            yield
        finally:
            await run_in_threadpool(supervisor.stop)

    app = FastAPI(
        title="datagora catalog",
        version="1",
        description="Search over every dataset on the ledger, indexed from its events.",
        lifespan=lifespan,
    )
    app.state.supervisor = supervisor

    @app.get(
        "/datasets",
        summary="Search datasets",
        responses={
            **_INVALID,
            400: _why("The query cannot be run (min_price above max_price)."),
        },
    )
    def list_datasets(
        q: Annotated[str, Query(max_length=500)] = "",
        tag: Annotated[list[str] | None, Query()] = None,
        license: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        owner: Annotated[
            str | None, Query(pattern="^0x[0-9a-fA-F]{40}$", description="An account address.")
        ] = None,
        service: Annotated[
            Literal["download", "compute", "dp"] | None,
            Query(description='A service type, or "dp": compute with differential privacy.'),
        ] = None,
        has_mock: bool | None = None,
        pricing: Literal["none", "fixed", "free"] | None = None,
        include_inactive: bool = False,
        sort: Literal["relevance", "newest", "oldest", "price_asc", "price_desc", "orders"] = (
            "relevance"
        ),
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        *,
        request: Request,
    ) -> dict[str, Any]:
        for name in set(request.query_params) - {"tag"}:
            if len(request.query_params.getlist(name)) > 1:
                # Which one was meant? Taking the last would answer another question.
                raise HTTPException(422, f"the query parameter {name!r} is given more than once")
        query = SearchQuery(
            q=q,
            tags=tuple(tag or ()),
            license=license,
            min_price=min_price,
            max_price=max_price,
            owner=owner,
            service=service,
            has_mock=has_mock,
            pricing=pricing,
            include_inactive=include_inactive,
            sort=sort,
            limit=limit,
            offset=offset,
        )
        try:
            return search(database, query).to_json()
        except SearchError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get(
        "/datasets/{dataset}",
        summary="Everything indexed about one dataset",
        responses={**_INVALID, 404: _why("No dataset with that id is indexed (yet).")},
    )
    def get_dataset(
        dataset: Annotated[int, PathParam(ge=0, le=MAX_ID, description="A dataset id.")],
    ) -> dict[str, Any]:
        details = dataset_details(database, dataset)
        if details is None:
            raise HTTPException(404, f"no dataset {dataset} indexed (yet)")
        return details

    @app.get(
        "/nft/{dataset}",
        summary="ERC-721 metadata JSON of a dataset's token (what DataNFT.tokenURI names)",
        responses={**_INVALID, 404: _why("No dataset with that id is indexed (yet).")},
    )
    def nft_metadata(
        request: Request,
        dataset: Annotated[int, PathParam(ge=0, le=MAX_ID, description="A dataset id.")],
    ) -> dict[str, Any]:
        details = dataset_details(database, dataset)
        if details is None:
            raise HTTPException(404, f"no dataset {dataset} indexed (yet)")
        return erc721_metadata(details, str(request.base_url).rstrip("/"))

    @app.put(
        "/metadata/{sha256}",
        status_code=201,
        summary="Hand the catalog a metadata document",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
                "description": f"The document (at most {MAX_METADATA_BYTES} bytes), "
                "hashing to the name.",
            }
        },
        responses={
            **_INVALID,
            413: _why("The body is too large (refused before it is read)."),
        },
    )
    async def put_metadata(
        sha256: Annotated[str, PathParam(pattern=_SHA256)], request: Request
    ) -> dict[str, str]:
        body = await read_capped(request, MAX_METADATA_BYTES)
        if body is None:
            raise HTTPException(413, f"metadata is limited to {MAX_METADATA_BYTES} bytes")
        if hashlib.sha256(body).hexdigest() != sha256:
            raise HTTPException(422, "the body does not hash to the name (SHA-256 mismatch)")
        try:
            digest = await run_in_threadpool(indexer.put_metadata, body)
        except MetadataError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"sha256": digest}

    @app.get(
        "/metadata/{sha256}",
        summary="A metadata document by its SHA-256",
        response_class=Response,
        responses={
            200: {"description": "The document", "content": {"application/json": {}}},
            **_INVALID,
            404: _why("No metadata document with this hash here."),
        },
    )
    def get_metadata(sha256: Annotated[str, PathParam(pattern=_SHA256)]) -> Response:
        with database.engine.connect() as conn:
            data = conn.execute(
                t.blobs.select().with_only_columns(t.blobs.c.data).where(t.blobs.c.sha256 == sha256)
            ).scalar()
        if data is None:
            raise HTTPException(404, "no metadata document with this hash here")
        return Response(data.encode(), media_type="application/json")

    @app.get(
        "/health",
        summary="Indexer liveness, position, lag and last error",
        responses={503: {"description": "The indexer is stalled or one of its threads died."}},
    )
    def health() -> JSONResponse:
        healthy, fields = supervisor.health()
        with database.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(t.datasets)).scalar_one()
        fields.update(datasets=int(count), database=database.dialect)
        return JSONResponse(fields, status_code=200 if healthy else 503)

    return app
