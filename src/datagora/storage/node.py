"""The storage node HTTP service: content-addressed share storage on local disk.

``PUT /shares/{sha256}`` stores a body only if it hashes to its name and fits the
size cap; ``GET``/``HEAD /shares/{sha256}`` serve it; ``GET /health`` reports
counts and free space. ``PUT /shares`` stores a batch of shares in one request
(a ``datagora.batch.v1`` frame, see :mod:`datagora.storage.batch`), all or none;
``POST /shares/batch-get`` serves the requested shares it holds in one frame.
Any content-addressed blob (a share, a manifest, a placement record) can be
stored: the node checks hashes, never holds a key.

``PUT /placements/{sha256}`` stores a placement record the same way after parsing
it strictly, and indexes it by manifest, so ``GET /placements?manifest=`` tells a
reader which records exist. ``GET /proofs/{sha256}?manifest=`` returns a share with
its Merkle audit path, computed from a manifest this node holds.

Writes are atomic: the body streams into a temporary file in ``DATA/tmp``, is
hashed on the way, fsynced, and only then renamed into ``DATA/shares/ab/abcd…``
(and the directory fsynced). A crash leaves at most a temporary file, which is
never served and is removed at the next start. A batch is renamed into place
only once every one of its shares has been received, verified and fsynced: a
rejected batch stores nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from datagora.storage.batch import (
    BATCH_MAGIC,
    MAX_BATCH_SHARES,
    BatchFormatError,
    BatchTooLargeError,
    EntryData,
    EntryStart,
    FrameReader,
    frame_size,
)
from datagora.storage.errors import IntegrityError, ManifestError, PlacementError, StorageError
from datagora.storage.manifest import MAX_MANIFEST_BYTES, VerifiedManifest, verify_manifest
from datagora.storage.placement import parse_placement

__all__ = ["DEFAULT_MAX_BATCH_BYTES", "create_storage_app"]

_HEX: Final = frozenset("0123456789abcdef")
_MANIFEST_CACHE: Final = 8
DEFAULT_MAX_BATCH_BYTES: Final = 64 << 20
# Received shares of a batch are fsynced in groups, one worker-thread call per
# group (a hand-off per share cost more than the share's hashing), while more
# arrive; at most _FSYNC_AHEAD groups at a time, which bounds the open files.
_FSYNC_GROUP: Final = 8
_FSYNC_AHEAD: Final = 2
_BATCH_BODY = {
    "required": True,
    "description": (
        "A datagora.batch.v1 frame (big-endian): magic 'DGB1', u32 count, then per "
        "share its 32-byte SHA-256, u32 length and bytes. See docs/formats.md."
    ),
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
_BATCH_RESPONSE = {
    200: {
        "description": "A datagora.batch.v1 frame of the requested shares this node "
        "holds, in request order; shares it lacks are left out.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


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


class _ShareStore:
    """The on-disk layout and its counters."""

    def __init__(self, data_dir: Path, max_share_bytes: int, max_batch_bytes: int) -> None:
        if max_share_bytes <= 0 or max_batch_bytes <= 0:
            raise StorageError("max_share_bytes and max_batch_bytes must be positive")
        self.root = data_dir
        self.shares = data_dir / "shares"
        self.tmp = data_dir / "tmp"
        self.placements = data_dir / "placements"
        self.max_share_bytes = max_share_bytes
        self.max_batch_bytes = max_batch_bytes
        for folder in (self.shares, self.tmp, self.placements):
            folder.mkdir(parents=True, exist_ok=True)
        # Leftovers of interrupted writes: never complete, never served.
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
        self.count = 0
        self.bytes = 0
        for path in self.shares.glob("*/*"):
            self.count += 1
            self.bytes += path.stat().st_size
        self.lock = asyncio.Lock()
        self.manifests: OrderedDict[str, VerifiedManifest] = OrderedDict()

    def path(self, name: str) -> Path:
        return self.shares / name[:2] / name

    def commit(self, tmp_path: Path, name: str) -> tuple[bool, bool]:
        """Move a complete, fsynced temp file into place; returns (stored, new).

        Nothing is stored if an intact copy is already there; a copy that has rotted
        on disk is replaced (stored, not new)."""
        final = self.path(name)
        existed = final.exists()
        if existed and _file_sha256(final) == name:
            tmp_path.unlink(missing_ok=True)
            return False, False
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
        return True, not existed

    def commit_many(self, received: list[tuple[Path, str]]) -> list[tuple[bool, bool]]:
        """:meth:`commit` for each fsynced ``(temp file, name)``, each directory fsynced
        once at the end (a crash before then can lose a rename, never expose a
        partial share)."""
        results = []
        touched: set[Path] = set()
        for tmp_path, name in received:
            final = self.path(name)
            existed = final.exists()
            if existed and _file_sha256(final) == name:
                tmp_path.unlink(missing_ok=True)
                results.append((False, False))
                continue
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp_path, final)
            touched.add(final.parent)
            results.append((True, not existed))
        for folder in sorted(touched):
            _fsync_dir(folder)
        return results

    def index_placement(self, manifest_hex: str, record_hex: str, sequence: int) -> None:
        """Remember that ``record_hex`` places ``manifest_hex`` (a tiny marker file
        holding the sequence, written atomically)."""
        folder = self.placements / manifest_hex
        folder.mkdir(exist_ok=True)
        marker = folder / record_hex
        if marker.exists():
            return
        tmp = self.tmp / f"{record_hex}.index"
        tmp.write_text(str(sequence))
        os.replace(tmp, marker)
        _fsync_dir(folder)

    def placement_records(self, manifest_hex: str) -> list[dict[str, Any]]:
        folder = self.placements / manifest_hex
        if not folder.is_dir():
            return []
        found = []
        for marker in folder.iterdir():
            if self.path(marker.name).is_file():
                found.append({"hash": marker.name, "sequence": int(marker.read_text())})
        return sorted(found, key=lambda r: (-r["sequence"], r["hash"]))

    def verified_manifest(self, name: str) -> VerifiedManifest:
        """The manifest stored under ``name``, parsed strictly (cached: it is immutable)."""
        cached = self.manifests.get(name)
        if cached is not None:
            self.manifests.move_to_end(name)
            return cached
        path = self.path(name)
        if not path.is_file():
            raise _Refused(404, "this node does not hold that manifest")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise _Refused(422, "the blob stored under that name is too large to be a manifest")
        try:
            verified = verify_manifest(path.read_bytes(), bytes.fromhex(name))
        except ManifestError as exc:
            raise _Refused(
                422, f"the blob stored under that name is not a manifest: {exc}"
            ) from None
        self.manifests[name] = verified
        if len(self.manifests) > _MANIFEST_CACHE:
            self.manifests.popitem(last=False)
        return verified


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    # Persist a rename itself, not only the file contents.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_close(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


async def _fsync_all(handles: list[Any]) -> None:
    """Fsync and close each handle in one worker-thread call (each is closed even
    if an fsync fails; the first failure is raised)."""

    def work() -> None:
        failure: OSError | None = None
        for handle in handles:
            try:
                _fsync_close(handle)
            except OSError as exc:
                failure = failure or exc
            finally:
                handle.close()
        if failure is not None:
            raise failure

    await asyncio.to_thread(work)


def create_storage_app(
    data_dir: Path, max_share_bytes: int, max_batch_bytes: int | None = None
) -> FastAPI:
    """A FastAPI app storing shares under ``data_dir``, each at most ``max_share_bytes``;
    a batch carries at most ``max_batch_bytes`` of shares (default 64 MiB, or one
    largest share if that is more)."""
    if max_batch_bytes is None:
        max_batch_bytes = max(DEFAULT_MAX_BATCH_BYTES, max_share_bytes)
    store = _ShareStore(data_dir, max_share_bytes, max_batch_bytes)
    app = FastAPI(
        title="datagora storage node",
        version="1",
        description="Content-addressed storage of encrypted, erasure-coded shares.",
    )

    @app.exception_handler(_Refused)
    async def refused(_: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    async def receive(name: str, request: Request, placement: bool) -> JSONResponse:
        _check_name(name)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > store.max_share_bytes:
            raise _Refused(413, f"share is larger than this node's cap of {store.max_share_bytes}")
        fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix=f"{name}.")
        tmp_path = Path(tmp_name)
        handle = os.fdopen(fd, "wb")
        digest = hashlib.sha256()
        size = 0
        try:
            async for piece in request.stream():
                size += len(piece)
                if size > store.max_share_bytes:
                    raise _Refused(
                        413, f"share is larger than this node's cap of {store.max_share_bytes}"
                    )
                digest.update(piece)
                handle.write(piece)
            if digest.hexdigest() != name:
                raise _Refused(422, "body does not hash to the share name (SHA-256 mismatch)")
            await asyncio.to_thread(_fsync_close, handle)
            record = None
            if placement:
                try:
                    record = parse_placement(tmp_path.read_bytes())
                except PlacementError as exc:
                    raise _Refused(422, str(exc)) from None
            async with store.lock:
                created, new = await asyncio.to_thread(store.commit, tmp_path, name)
                if new:
                    store.count += 1
                    store.bytes += size
                if record is not None:
                    await asyncio.to_thread(
                        store.index_placement, record.manifest_hash.hex(), name, record.sequence
                    )
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _Refused(507, "the node's disk is full; try another node") from None
            raise _Refused(500, f"the node could not write the share ({exc.strerror})") from None
        finally:
            if not handle.closed:
                handle.close()
            tmp_path.unlink(missing_ok=True)
        return JSONResponse(
            {"name": name, "size": size, "stored": created}, status_code=201 if created else 200
        )

    async def receive_batch(request: Request) -> JSONResponse:
        cap = frame_size([store.max_batch_bytes] + [0] * (MAX_BATCH_SHARES - 1))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _Refused(413, f"batch is larger than this node's cap of {cap} bytes")
        reader = FrameReader(store.max_share_bytes, store.max_batch_bytes)
        temps: list[Path] = []
        received: list[tuple[Path, str, int]] = []
        syncing: deque[asyncio.Task[None]] = deque()
        group: list[Any] = []
        handle: Any = None
        digest = hashlib.sha256()
        name = ""
        try:
            async for piece in request.stream():
                for event in reader.feed(piece):
                    if isinstance(event, EntryStart):
                        name = event.name.hex()
                        fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix=f"{name}.")
                        temps.append(Path(tmp_name))
                        handle = os.fdopen(fd, "wb")
                        digest = hashlib.sha256()
                    elif isinstance(event, EntryData):
                        digest.update(event.data)
                        handle.write(event.data)
                    else:
                        if digest.hexdigest() != name:
                            raise _Refused(
                                422,
                                f"share {event.index} ({name}) does not hash to its name "
                                "(SHA-256 mismatch); nothing from this batch was stored",
                            )
                        received.append((temps[-1], name, handle.tell()))
                        group.append(handle)
                        handle = None
                        if len(group) >= _FSYNC_GROUP:
                            syncing.append(asyncio.create_task(_fsync_all(group)))
                            group = []
                            while len(syncing) > _FSYNC_AHEAD:
                                await syncing.popleft()
            count = reader.finish()
            if group:
                syncing.append(asyncio.create_task(_fsync_all(group)))
                group = []
            while syncing:
                await syncing.popleft()
            async with store.lock:
                results = await asyncio.to_thread(
                    store.commit_many, [(path, n) for path, n, _ in received]
                )
                for (_, _, size), (_, new) in zip(received, results, strict=True):
                    if new:
                        store.count += 1
                        store.bytes += size
        except BatchTooLargeError as exc:
            raise _Refused(413, f"{exc}; nothing from this batch was stored") from None
        except BatchFormatError as exc:
            raise _Refused(400, f"{exc}; nothing from this batch was stored") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _Refused(507, "the node's disk is full; try another node") from None
            raise _Refused(500, f"the node could not write the batch ({exc.strerror})") from None
        finally:
            # Fsyncs still running own their handles: let them finish first.
            await asyncio.gather(*syncing, return_exceptions=True)
            for unsynced in [*group, handle]:
                if unsynced is not None:
                    unsynced.close()
            for path in temps:
                path.unlink(missing_ok=True)
        stored = sum(created for created, _ in results)
        return JSONResponse(
            {
                "count": count,
                "stored": stored,
                "shares": [
                    {"name": n, "size": size, "stored": created}
                    for (_, n, size), (created, _) in zip(received, results, strict=True)
                ],
            },
            status_code=201 if stored else 200,
        )

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
    )
    async def put_shares(request: Request) -> JSONResponse:
        return await receive_batch(request)

    @app.post(
        "/shares/batch-get",
        summary="Fetch several shares in one frame",
        response_class=Response,
        responses=_BATCH_RESPONSE,  # type: ignore[arg-type]
    )
    async def batch_get(wanted: BatchGet) -> Response:
        for name in wanted.names:
            _check_name(name)

        def sizes() -> list[tuple[str, int]]:
            held = []
            for name in wanted.names:
                with contextlib.suppress(FileNotFoundError):
                    held.append((name, store.path(name).stat().st_size))
            return held

        held = await asyncio.to_thread(sizes)

        async def frame() -> AsyncIterator[bytes]:
            yield BATCH_MAGIC + len(held).to_bytes(4, "big")
            for name, size in held:
                data = await asyncio.to_thread(store.path(name).read_bytes)
                if len(data) != size:
                    # Never frame bytes under a length they do not have: abort the body.
                    raise StorageError(f"share {name} changed size while being served")
                yield bytes.fromhex(name) + size.to_bytes(4, "big") + data

        return StreamingResponse(
            frame(),
            media_type="application/octet-stream",
            headers={"content-length": str(frame_size([size for _, size in held]))},
        )

    @app.put("/shares/{name}", status_code=201, summary="Store a share under its SHA-256")
    async def put_share(name: str, request: Request) -> JSONResponse:
        return await receive(name, request, placement=False)

    @app.put(
        "/placements/{name}",
        status_code=201,
        summary="Store a placement record under its SHA-256 and index it by manifest",
    )
    async def put_placement(name: str, request: Request) -> JSONResponse:
        return await receive(name, request, placement=True)

    @app.get("/placements", summary="The placement records this node holds for a manifest")
    async def list_placements(
        manifest: str = Query(description="the manifest's SHA-256, 64 hex digits"),
    ) -> dict[str, Any]:
        records = await asyncio.to_thread(store.placement_records, _check_name(manifest))
        return {"manifest": manifest, "records": records}

    @app.get("/proofs/{name}", summary="A share with its Merkle audit path under a manifest")
    async def get_proof(
        name: str,
        manifest: str = Query(description="SHA-256 of a manifest this node holds"),
    ) -> dict[str, Any]:
        _check_name(name)
        _check_name(manifest)
        verified = await asyncio.to_thread(store.verified_manifest, manifest)
        try:
            proof = verified.proof(bytes.fromhex(name))
        except IntegrityError:
            raise _Refused(422, "that share is not listed in that manifest") from None
        path = store.path(name)
        if not path.is_file():
            raise _Refused(404, "no share with this name on this node")
        data = await asyncio.to_thread(path.read_bytes)
        return {
            "share": base64.b64encode(data).decode("ascii"),
            "proof": proof.to_json(),
            "root": verified.manifest.merkle_root.hex(),
            "manifest": manifest,
        }

    async def get_share(name: str, request: Request) -> Response:
        path = store.path(_check_name(name))
        if request.method == "HEAD":
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise _Refused(404, "no share with this name on this node") from None
            headers = {"content-length": str(size)}
            return Response(media_type="application/octet-stream", headers=headers)
        try:
            # One read in a worker thread: shares are capped in size, and reading whole
            # costs far less per request than streaming a file in small pieces.
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise _Refused(404, "no share with this name on this node") from None
        return Response(data, media_type="application/octet-stream")

    for method in ("GET", "HEAD"):
        app.add_api_route(
            "/shares/{name}",
            get_share,
            methods=[method],
            operation_id=f"{method.lower()}_share",
            summary="Fetch a share" if method == "GET" else "Check a share exists, and its size",
            response_model=None,
        )

    @app.get("/health", summary="Liveness and storage statistics")
    async def health() -> dict[str, Any]:
        usage = shutil.disk_usage(store.root)
        return {
            "status": "ok",
            "shares": store.count,
            "bytes": store.bytes,
            "max_share_bytes": store.max_share_bytes,
            "max_batch_bytes": store.max_batch_bytes,
            "max_batch_shares": MAX_BATCH_SHARES,
            "free_bytes": usage.free,
        }

    return app
