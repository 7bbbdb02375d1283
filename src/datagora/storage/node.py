"""The storage node HTTP service: content-addressed share storage on local disk.

``PUT /shares/{sha256}`` stores a body only if it hashes to its name and fits the
size cap; ``GET``/``HEAD /shares/{sha256}`` serve it; ``GET /health`` reports
counts and free space. ``PUT /shares`` stores a batch of shares in one request
(a ``datagora.batch.v1`` frame, see :mod:`datagora.storage.batch`), all or none;
``POST /shares/batch-get`` serves the requested shares it holds in one frame.
Any content-addressed blob (a share, a manifest, a placement record) can be
stored: the node checks hashes, never holds a key.

Every write is signed by an account with a byte quota on this node
(:mod:`datagora.storage.auth`): an unsigned, mis-signed, replayed or expired
write is refused with 401, an account without a quota with 403, one beyond its
quota with 413, and nothing is stored. Reads stay open.

``PUT /placements/{sha256}`` stores a placement record the same way after parsing
it strictly and checking it: against the manifest (which this node must already
hold), its locations against the known storage nodes, its sequence (the first
record of a manifest is 0, each later one the next number), and on a node that
reads the ledger its writer against the dataset's controller. It is then indexed
by manifest, so ``GET /placements?manifest=`` tells a reader which records exist.
``GET /proofs/{sha256}?manifest=`` returns a share with
its Merkle audit path, computed from a manifest this node holds.

Shares live in a pack store (:mod:`datagora.storage.packs`): appended to large
segment files, hashed on the way, and indexed in SQLite. A request's shares
become visible together, once every one of them has been received and verified,
the segment fsynced and their index rows committed in one transaction: a
rejected or interrupted request stores nothing, and a crash mid-request leaves
only bytes no index row points at, cut off at the next start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import shutil
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from datagora.crypto.nonces import FileNonceStore
from datagora.storage.auth import (
    AUTH_HEADER,
    SCHEME,
    QuotaBook,
    StorageWrite,
    WritePolicy,
    WriteRefused,
    frame_index_digest,
)
from datagora.storage.batch import (
    BATCH_MAGIC,
    MAX_BATCH_SHARES,
    EntryData,
    EntryStart,
    FrameReader,
    frame_size,
)
from datagora.storage.errors import (
    BatchFormatError,
    BatchTooLargeError,
    IntegrityError,
    ManifestError,
    PlacementError,
    StorageError,
    VanishedError,
)
from datagora.storage.manifest import (
    MAX_MANIFEST_BYTES,
    VerifiedManifest,
    local_chunk_records,
    local_leaf_proof,
    verify_manifest,
)
from datagora.storage.merkle import MerkleProof
from datagora.storage.packs import Holding, PackStore
from datagora.storage.placement import (
    MAX_PLACEMENT_BYTES,
    MAX_SEQUENCE,
    PlacementRecord,
    parse_placement,
)
from datagora.storage.retention import Retention
from datagora.storage.shares import SHARE_MAGIC, ShareHeader

__all__ = ["DEFAULT_MAX_BATCH_BYTES", "create_storage_app", "default_policy"]

_HEX: Final = frozenset("0123456789abcdef")
_MANIFEST_CACHE: Final = 8
DEFAULT_MAX_BATCH_BYTES: Final = 64 << 20
_READ_GROUP_BYTES: Final = 1 << 20
_BATCH_BODY = {
    "required": True,
    "description": (
        "A datagora.batch.v1 frame (big-endian): magic 'DGB1', u32 count, then per "
        "share its 32-byte SHA-256, u32 length and bytes. See docs/formats.md."
    ),
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
_Responses = dict[int | str, dict[str, Any]]
_BLOB_BODY = {
    "required": True,
    "description": "The blob's bytes; they must hash to the name.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
_BATCH_RESPONSE: Final[_Responses] = {
    200: {
        "description": "A datagora.batch.v1 frame of the requested shares this node "
        "holds, in request order; shares it lacks are left out.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _why(text: str) -> dict[str, Any]:
    return {"description": text, "model": _Reason}


class _Reason(BaseModel):
    """Why a request was refused: a sentence, or FastAPI's list of invalid fields."""

    detail: str | list[dict[str, Any]]


WriteHeader = Annotated[
    str | None,
    Header(
        alias=AUTH_HEADER,
        description="The signed write: a StorageWrite (datagora.signed-request.v1 JSON, "
        "base64) by an account with a quota on this node, naming this node, the method, "
        "the path, the body's digest and size.",
    ),
]
_BAD_NAME: Final[_Responses] = {400: _why("A name is not 64 lowercase hex digits (a SHA-256).")}
_NOT_HELD: Final[_Responses] = {404: _why("This node does not hold that blob.")}
_WRITE: Final[_Responses] = {
    **_BAD_NAME,
    401: _why(
        "The write is not signed (x-datagora-write), badly signed, for another node, "
        "expired or replayed."
    ),
    403: _why("The signing account has no quota on this node, or may not write this record."),
    409: _why(
        "A blob vanished from the store while being written (try again), or a "
        "placement record's sequence is not the next one."
    ),
    413: _why("The body is larger than this node's cap, or the account's quota."),
    422: _why("The body does not hash to its name (or is not a well-formed record)."),
    500: _why("The node could not write to its disk."),
    507: _why("The node's disk is full; try another node."),
}
# The pattern is documented but checked by `_check_name` (400 with a reason), so that
# a bad name is refused the same way wherever it appears (path, query or body).
_HEX64: Final = {"pattern": "^[0-9a-f]{64}$"}
Name = Annotated[
    str,
    PathParam(description="SHA-256 of the blob, 64 lowercase hex digits", json_schema_extra=_HEX64),
]


class BatchGet(BaseModel):
    """The shares wanted from ``POST /shares/batch-get``."""

    names: list[str] = Field(
        max_length=MAX_BATCH_SHARES,
        description="share names (64 lowercase hex digits each), at most 1024",
    )


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def _check_name(name: str) -> str:
    if len(name) != 64 or not set(name) <= _HEX:
        raise _Refused(400, "a share name is the SHA-256 of its bytes as 64 lowercase hex digits")
    return name


class _Node:
    """The pack store, the caps and a cache of parsed manifests."""

    def __init__(self, data_dir: Path, max_share_bytes: int, max_batch_bytes: int) -> None:
        if max_share_bytes <= 0 or max_batch_bytes <= 0:
            raise StorageError("max_share_bytes and max_batch_bytes must be positive")
        self.root = data_dir
        self.max_share_bytes = max_share_bytes
        # A blob stored alone may be a manifest or placement record as large as
        # their limit, whatever the share cap (storage/limits.py).
        self.max_blob_bytes = max(max_share_bytes, MAX_MANIFEST_BYTES, MAX_PLACEMENT_BYTES)
        self.max_batch_bytes = max_batch_bytes
        data_dir.mkdir(parents=True, exist_ok=True)
        # Leftovers of interrupted writes of the file-per-share layout: never served.
        tmp = data_dir / "tmp"
        if tmp.is_dir():
            for leftover in tmp.iterdir():
                leftover.unlink(missing_ok=True)
            tmp.rmdir()
        self.packs = PackStore(data_dir)
        if (data_dir / "shares").is_dir():
            self.packs.import_files(data_dir / "shares", data_dir / "placements")
        self.manifests: OrderedDict[str, VerifiedManifest] = OrderedDict()

    async def holding(self, name: bytes) -> Holding:
        """What is held under ``name`` (the index alone answers for a name not held)."""
        if self.packs.size(name) is None:
            return Holding.NOTHING
        return await asyncio.to_thread(self.packs.holding, name)

    def placement_records(self, manifest_hex: str) -> list[dict[str, Any]]:
        found = [
            {"hash": record.hex(), "sequence": sequence}
            for record, sequence in self.packs.placements(bytes.fromhex(manifest_hex))
        ]
        return sorted(found, key=lambda r: (-r["sequence"], r["hash"]))

    def verified_manifest(self, name: str) -> VerifiedManifest:
        """The manifest stored under ``name``, parsed strictly (cached: it is immutable)."""
        cached = self.manifests.get(name)
        if cached is not None:
            self.manifests.move_to_end(name)
            return cached
        raw = bytes.fromhex(name)
        size = self.packs.size(raw)
        if size is None:
            raise _Refused(404, "this node does not hold that manifest")
        if size > MAX_MANIFEST_BYTES:
            raise _Refused(422, "the blob stored under that name is too large to be a manifest")
        data = self.packs.read(raw)
        if data is None:
            raise _Refused(404, "this node does not hold that manifest")
        try:
            verified = verify_manifest(data, raw)
        except ManifestError as exc:
            raise _Refused(
                422, f"the blob stored under that name is not a manifest: {exc}"
            ) from None
        self.manifests[name] = verified
        if len(self.manifests) > _MANIFEST_CACHE:
            self.manifests.popitem(last=False)
        return verified


def _read_group(packs: PackStore, held: list[tuple[bytes, int]]) -> list[bytes | None]:
    return [packs.read(name) for name, _ in held]


def _groups(held: list[tuple[bytes, int]], limit: int) -> list[list[tuple[bytes, int]]]:
    """``held`` cut into consecutive groups of at most ``limit`` bytes (or one share)."""
    groups: list[list[tuple[bytes, int]]] = []
    total = limit
    for item in held:
        if total + item[1] > limit:
            groups.append([])
            total = 0
        groups[-1].append(item)
        total += item[1]
    return groups


def default_policy(data_dir: Path) -> WritePolicy:
    """Signed writes with the quotas and nonces kept in ``data_dir``, no ledger."""
    return WritePolicy(QuotaBook.in_dir(data_dir), FileNonceStore(data_dir / "nonces.dat"))


def create_storage_app(
    data_dir: Path,
    max_share_bytes: int,
    max_batch_bytes: int | None = None,
    *,
    retention: Retention | None = None,
    policy: WritePolicy | None = None,
) -> FastAPI:
    """A FastAPI app storing shares under ``data_dir``, each at most ``max_share_bytes``;
    a batch carries at most ``max_batch_bytes`` of shares (default 64 MiB, or one
    largest share if that is more).

    Writes are checked by ``policy`` (default :func:`default_policy`: signed, by
    accounts with a quota in ``data_dir/quotas.sqlite``). With ``retention`` the node
    keeps only what the ledger records: every ``retention.every`` seconds it sweeps
    (:mod:`datagora.storage.retention`) and compacts its segments after deleting."""
    if max_batch_bytes is None:
        max_batch_bytes = max(DEFAULT_MAX_BATCH_BYTES, max_share_bytes)
    store = _Node(data_dir, max_share_bytes, max_batch_bytes)
    writes = policy if policy is not None else default_policy(data_dir)
    placing = asyncio.Lock()

    async def sweep_forever(policy: Retention) -> None:
        while True:
            await asyncio.sleep(policy.every)
            report = await asyncio.to_thread(policy.sweep, store.packs)
            if report.deleted:
                await asyncio.to_thread(release_deleted, report.deleted_names)
                await asyncio.to_thread(store.packs.compact)

    def release_deleted(names: list[str]) -> int:
        """Give the writers back the quota of blobs retention deleted (only those no
        longer held: one stored again meanwhile was kept)."""
        gone = [bytes.fromhex(n) for n in names]
        return writes.quotas.release([n for n in gone if store.packs.size(n) is None])

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper = None if retention is None else asyncio.create_task(sweep_forever(retention))
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            store.packs.close()
            writes.quotas.close()
            writes.nonces.close()

    app = FastAPI(
        title="datagora storage node",
        version="1",
        description="Content-addressed storage of encrypted, erasure-coded shares.",
        lifespan=lifespan,
    )

    @app.exception_handler(_Refused)
    async def refused(_: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    def authorize(request: Request, path: str, held: bool = False) -> StorageWrite:
        """The request's checked signed write, with its body size declared as signed
        and its bytes reserved from the writer's quota (see :func:`settle`)."""
        try:
            write = writes.verify(
                request.headers.get(AUTH_HEADER), str(request.base_url), "PUT", path
            )
        except WriteRefused as exc:
            raise _Refused(exc.status, exc.reason) from None
        declared = request.headers.get("content-length")
        if declared is not None and declared != str(write.size):
            raise _Refused(
                401, f"the body is {declared} bytes, the write was signed for {write.size}"
            )
        try:
            # A blob the node holds already costs nothing (but needs a quota).
            writes.quotas.reserve(write.writer, 0 if held else write.size)
        except WriteRefused as exc:
            raise _Refused(exc.status, exc.reason) from None
        return write

    async def check_placement(record: PlacementRecord, raw: bytes, writer: str) -> None:
        """Refuse a placement record that does not fit its manifest, names unknown
        nodes, skips a sequence number, or (reading the ledger) comes from someone
        other than the dataset's controller."""
        name = record.manifest_hash.hex()
        if store.packs.size(record.manifest_hash) is None:
            raise _Refused(
                422, f"this node does not hold manifest {name}: store it before its placement"
            )
        verified = await asyncio.to_thread(store.verified_manifest, name)
        try:
            if verified.paged and record.format_version == 1:
                # Checked against every page this node holds, one at a time.
                chunks = local_chunk_records(verified, store.packs.read)
                await asyncio.to_thread(record.check, verified, chunks)
            else:
                record.check(verified)
        except (PlacementError, IntegrityError) as exc:
            raise _Refused(422, f"the placement record does not fit its manifest: {exc}") from None
        if writes.known_nodes is not None:
            known = {n.rstrip("/") for n in writes.known_nodes()}
            unknown = sorted(record.all_locations() - known)
            if unknown:
                raise _Refused(
                    422,
                    f"the placement names nodes that are not known storage nodes: "
                    f"{', '.join(unknown[:3])}{' …' if len(unknown) > 3 else ''}",
                )
        controls = None
        if writes.controllers is not None:
            controls = await asyncio.to_thread(
                writes.controllers.may_control, record.manifest_hash, writer
            )
            if controls is False:
                raise _Refused(
                    403,
                    f"{writer} does not control the dataset of manifest {name}: only its "
                    "controller (the data NFT's holder or an operator it approved) places it",
                )
        held = store.packs.placements(record.manifest_hash)
        if any(h == raw for h, _ in held):
            return  # the same record again: nothing changes
        if not held:
            if record.sequence != 0 and controls is not True:
                raise _Refused(
                    409,
                    f"this node holds no placement record of manifest {name}: the first "
                    f"is sequence 0, not {record.sequence}",
                )
            return
        top = max(sequence for _, sequence in held)
        if top >= MAX_SEQUENCE:
            raise _Refused(409, f"the placement sequence of manifest {name} is exhausted")
        if record.sequence != top + 1:
            raise _Refused(
                409,
                f"placement sequence {record.sequence} is not the next one: this node "
                f"holds sequence {top} of manifest {name}, so the next is {top + 1}",
            )

    async def receive(name: str, request: Request, placement: bool) -> JSONResponse:
        raw = bytes.fromhex(_check_name(name))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > store.max_blob_bytes:
            raise _Refused(413, f"blob is larger than this node's cap of {store.max_blob_bytes}")
        held = store.packs.size(raw) is not None
        # In a worker thread: the nonce store syncs each used nonce to disk.
        write = await asyncio.to_thread(
            authorize, request, f"/{'placements' if placement else 'shares'}/{name}", held
        )
        reserved = 0 if held else write.size
        stored = 0
        blobs: list[tuple[bytes, int]] = []
        try:
            if write.content != raw:
                raise _Refused(401, "the write was signed for another body (content digest)")
            if placement:
                async with placing:
                    response, stored = await store_one(raw, request, True, write)
            else:
                response, stored = await store_one(raw, request, False, write)
            blobs = [(raw, stored)] if stored else []
        finally:
            writes.quotas.settle(write.writer, reserved, stored, blobs)
        return response

    def check_size(size: int, write: StorageWrite, done: bool) -> None:
        """A body larger than signed (so far), or of another size (once received)."""
        if size > write.size or (done and size != write.size):
            raise _Refused(
                401,
                f"the body is not the {write.size} bytes the write was signed for; "
                "nothing was stored",
            )

    async def store_one(
        raw: bytes, request: Request, placement: bool, write: StorageWrite
    ) -> tuple[JSONResponse, int]:
        size = 0
        head = b""
        parts: list[bytes] = []
        try:
            with store.packs.writer() as pack:
                pack.start(raw, await store.holding(raw))
                async for piece in request.stream():
                    size += len(piece)
                    check_size(size, write, done=False)
                    if size > store.max_blob_bytes:
                        raise _Refused(
                            413, f"blob is larger than this node's cap of {store.max_blob_bytes}"
                        )
                    if len(head) < len(SHARE_MAGIC):
                        head += piece[: len(SHARE_MAGIC) - len(head)]
                    if size > store.max_share_bytes and head.startswith(SHARE_MAGIC):
                        raise _Refused(
                            413, f"share is larger than this node's cap of {store.max_share_bytes}"
                        )
                    pack.write(piece)
                    if placement:
                        parts.append(piece)
                check_size(size, write, done=True)
                if not pack.finish():
                    raise _Refused(422, "body does not hash to the share name (its address)")
                placements = []
                if placement:
                    try:
                        record = parse_placement(b"".join(parts))
                    except PlacementError as exc:
                        raise _Refused(422, str(exc)) from None
                    await check_placement(record, raw, write.writer)
                    placements.append((record.manifest_hash, raw, record.sequence))
                ((created, _),) = await asyncio.to_thread(pack.commit, placements)
        except VanishedError as exc:
            raise _Refused(409, str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _Refused(507, "the node's disk is full; try another node") from None
            raise _Refused(500, f"the node could not write the share ({exc.strerror})") from None
        answer = JSONResponse(
            {"name": raw.hex(), "size": size, "stored": created},
            status_code=201 if created else 200,
        )
        return answer, size if created else 0

    async def receive_batch(request: Request) -> JSONResponse:
        cap = frame_size([store.max_batch_bytes] + [0] * (MAX_BATCH_SHARES - 1))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _Refused(413, f"batch is larger than this node's cap of {cap} bytes")
        write = await asyncio.to_thread(authorize, request, "/shares")
        blobs: list[tuple[bytes, int]] = []
        try:
            response, blobs = await store_batch(request, write)
        finally:
            writes.quotas.settle(write.writer, write.size, sum(n for _, n in blobs), blobs)
        return response

    async def store_batch(
        request: Request, write: StorageWrite
    ) -> tuple[JSONResponse, list[tuple[bytes, int]]]:
        reader = FrameReader(store.max_share_bytes, store.max_batch_bytes)
        received: list[tuple[bytes, int]] = []
        try:
            with store.packs.writer() as writer:
                size = 0
                async for piece in request.stream():
                    size += len(piece)
                    check_size(size, write, done=False)
                    for event in reader.feed(piece):
                        if isinstance(event, EntryStart):
                            received.append((event.name, event.length))
                            writer.start(event.name, await store.holding(event.name))
                        elif isinstance(event, EntryData):
                            writer.write(event.data)
                        elif not writer.finish():
                            raise _Refused(
                                422,
                                f"share {event.index} ({received[-1][0].hex()}) does not hash "
                                "to its name (address mismatch); nothing from this batch was "
                                "stored",
                            )
                count = reader.finish()
                check_size(size, write, done=True)
                if frame_index_digest(received) != write.content:
                    raise _Refused(
                        401,
                        "the batch is not the one the write was signed for (content "
                        "digest); nothing from this batch was stored",
                    )
                results = await asyncio.to_thread(writer.commit)
        except VanishedError as exc:
            raise _Refused(409, f"{exc}; nothing from this batch was stored") from None
        except BatchTooLargeError as exc:
            raise _Refused(413, f"{exc}; nothing from this batch was stored") from None
        except BatchFormatError as exc:
            raise _Refused(400, f"{exc}; nothing from this batch was stored") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _Refused(507, "the node's disk is full; try another node") from None
            raise _Refused(500, f"the node could not write the batch ({exc.strerror})") from None
        stored = sum(created for created, _ in results)
        answer = JSONResponse(
            {
                "count": count,
                "stored": stored,
                "shares": [
                    {"name": n.hex(), "size": size, "stored": created}
                    for (n, size), (created, _) in zip(received, results, strict=True)
                ],
            },
            status_code=201 if stored else 200,
        )
        charged = [
            (name, size)
            for (name, size), (created, _) in zip(received, results, strict=True)
            if created
        ]
        return answer, charged

    @app.put(
        "/shares",
        status_code=201,
        summary="Store a batch of shares, each under its SHA-256, all or none",
        description=(
            "The body is a datagora.batch.v1 frame. Every share is checked against its "
            "name and the size caps; any defect refuses the whole batch (400 malformed, "
            "413 too large, 422 naming the share that does not match) and stores nothing. "
            "201 if some share was newly stored, 200 if all were already held."
        ),
        openapi_extra={"requestBody": _BATCH_BODY},
        responses={**_WRITE, 400: _why("The body is not a well-formed datagora.batch.v1 frame.")},
    )
    async def put_shares(request: Request, _signed: WriteHeader = None) -> JSONResponse:
        return await receive_batch(request)

    @app.post(
        "/shares/batch-get",
        summary="Fetch several shares in one frame",
        response_class=Response,
        responses={**_BATCH_RESPONSE, **_BAD_NAME},
    )
    async def batch_get(wanted: BatchGet) -> Response:
        for name in wanted.names:
            _check_name(name)

        names = [bytes.fromhex(name) for name in wanted.names]

        def sizes() -> list[tuple[bytes, int]]:
            return [(name, size) for name in names if (size := store.packs.size(name)) is not None]

        held = await asyncio.to_thread(sizes)

        async def frame() -> AsyncIterator[bytes]:
            yield BATCH_MAGIC + len(held).to_bytes(4, "big")
            # Read in groups, one worker-thread call each: a hand-off per share costs
            # about as much as reading it.
            for group in _groups(held, _READ_GROUP_BYTES):
                blobs = await asyncio.to_thread(_read_group, store.packs, group)
                for (name, size), data in zip(group, blobs, strict=True):
                    if data is None or len(data) != size:
                        # Never frame bytes under a length they do not have: abort the body.
                        raise StorageError(f"share {name.hex()} changed while being served")
                    yield name + size.to_bytes(4, "big") + data

        return StreamingResponse(
            frame(),
            media_type="application/octet-stream",
            headers={"content-length": str(frame_size([size for _, size in held]))},
        )

    @app.put(
        "/shares/{name}",
        status_code=201,
        summary="Store a share under its SHA-256",
        openapi_extra={"requestBody": _BLOB_BODY},
        responses={**_WRITE, 200: {"description": "Already held: nothing stored again."}},
    )
    async def put_share(name: Name, request: Request, _signed: WriteHeader = None) -> JSONResponse:
        return await receive(name, request, placement=False)

    @app.put(
        "/placements/{name}",
        status_code=201,
        summary="Store a placement record under its SHA-256 and index it by manifest",
        openapi_extra={"requestBody": _BLOB_BODY},
        responses={**_WRITE, 200: {"description": "Already held: nothing stored again."}},
    )
    async def put_placement(
        name: Name, request: Request, _signed: WriteHeader = None
    ) -> JSONResponse:
        return await receive(name, request, placement=True)

    @app.get(
        "/placements",
        summary="The placement records this node holds for a manifest",
        responses=_BAD_NAME,
    )
    async def list_placements(
        manifest: str = Query(
            description="the manifest's SHA-256, 64 hex digits", json_schema_extra=_HEX64
        ),
    ) -> dict[str, Any]:
        records = await asyncio.to_thread(store.placement_records, _check_name(manifest))
        return {"manifest": manifest, "records": records}

    @app.get(
        "/proofs/{name}",
        summary="A share with its Merkle audit path under a manifest",
        responses={
            **_BAD_NAME,
            **_NOT_HELD,
            422: _why("The manifest is not one, or does not list that share."),
        },
    )
    async def get_proof(
        name: Name,
        manifest: str = Query(
            description="SHA-256 of a manifest this node holds", json_schema_extra=_HEX64
        ),
    ) -> dict[str, Any]:
        _check_name(name)
        _check_name(manifest)
        verified = await asyncio.to_thread(store.verified_manifest, manifest)
        if verified.paged:
            proof = await asyncio.to_thread(_paged_proof, verified, bytes.fromhex(name))
        else:
            try:
                proof = verified.proof(bytes.fromhex(name))
            except IntegrityError:
                raise _Refused(422, "that share is not listed in that manifest") from None
        data = await asyncio.to_thread(store.packs.read, bytes.fromhex(name))
        if data is None:
            raise _Refused(404, "no share with this name on this node")
        return {
            "share": base64.b64encode(data).decode("ascii"),
            "proof": proof.to_json(),
            "root": verified.manifest.merkle_root.hex(),
            "manifest": manifest,
        }

    def _paged_proof(verified: VerifiedManifest, share: bytes) -> MerkleProof:
        """A share's proof under a paged manifest: its leaf from its own header, its
        path through the pages this node holds."""
        data = store.packs.read(share)
        if data is None:
            raise _Refused(404, "no share with this name on this node")
        m = verified.manifest
        try:
            header = ShareHeader.unpack(data)
            if (header.dataset_id, header.version, header.n) != (m.dataset_id, m.version, m.n):
                raise IntegrityError("the share is of another dataset version")
            address, proof = local_leaf_proof(
                verified, header.chunk_index * m.n + header.share_index, store.packs.read
            )
        except IntegrityError as exc:
            raise _Refused(422, f"that share is not listed in that manifest: {exc}") from None
        if address != share:
            raise _Refused(422, "that share is not listed in that manifest")
        return proof

    async def get_share(name: Name, request: Request) -> Response:
        raw = bytes.fromhex(_check_name(name))
        if request.method == "HEAD":
            size = store.packs.size(raw)
            if size is None:
                raise _Refused(404, "no share with this name on this node")
            headers = {"content-length": str(size)}
            return Response(media_type="application/octet-stream", headers=headers)
        # One read in a worker thread: shares are capped in size, and reading whole
        # costs far less per request than streaming in small pieces.
        data = await asyncio.to_thread(store.packs.read, raw)
        if data is None:
            raise _Refused(404, "no share with this name on this node")
        return Response(data, media_type="application/octet-stream")

    for method in ("GET", "HEAD"):
        app.add_api_route(
            "/shares/{name}",
            get_share,
            methods=[method],
            operation_id=f"{method.lower()}_share",
            summary="Fetch a share" if method == "GET" else "Check a share exists, and its size",
            response_model=None,
            responses={
                200: {
                    "description": "The share's bytes" if method == "GET" else "Held",
                    "content": {"application/octet-stream": {}},
                },
                **_BAD_NAME,
                **_NOT_HELD,
            },
        )

    @app.get("/health", summary="Liveness and storage statistics")
    async def health() -> dict[str, Any]:
        usage = shutil.disk_usage(store.root)
        return {
            "status": "ok",
            "shares": store.packs.count,
            "bytes": store.packs.bytes,
            "max_share_bytes": store.max_share_bytes,
            "max_batch_bytes": store.max_batch_bytes,
            "max_batch_shares": MAX_BATCH_SHARES,
            "free_bytes": usage.free,
            "writes": {"scheme": SCHEME, "chain_id": writes.chain_id, "header": AUTH_HEADER},
            "retention": None
            if retention is None
            else {
                "grace_seconds": retention.grace,
                "sweep_every_seconds": retention.every,
                "last_sweep": None if retention.last is None else retention.last.to_json(),
            },
        }

    app.state.packs = store.packs
    app.state.quotas = writes.quotas
    app.state.retention = retention
    return app
