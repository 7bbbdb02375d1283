"""Helpers shared by the storage tests: encode a byte string into an in-memory store;
run storage nodes in threads."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import wrap_data_key
from datagora.storage.manifest import Manifest, VerifiedManifest, verify_manifest
from datagora.storage.node import create_storage_app
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream

OWNER = X25519PrivateKey.generate()


@dataclass
class Encoded:
    params: EncodingParams
    key: DataKey
    manifest: Manifest
    verified: VerifiedManifest
    store: dict[bytes, bytes]

    def share(self, chunk: int, number: int) -> bytes:
        return self.store[self.manifest.chunks[chunk].shares[number]]


def encode_bytes(
    data: bytes,
    *,
    chunk_size: int = 64,
    k: int = 3,
    n: int = 5,
    version: int = 1,
    dataset_id: bytes = bytes(range(32)),
    key: DataKey | None = None,
) -> Encoded:
    params = EncodingParams(dataset_id, version, chunk_size=chunk_size, k=k, n=n)
    key = key or DataKey.generate()
    builder = ManifestBuilder(params)
    store: dict[bytes, bytes] = {}
    for chunk in encode_stream(io.BytesIO(data), params, key):
        builder.add(chunk)
        for share in chunk.shares:
            store[share.sha256] = share.data
    manifest = builder.build(wrap_data_key(key, OWNER.public_key(), dataset_id, version))
    return Encoded(
        params, key, manifest, verify_manifest(manifest.to_bytes(), manifest.digest()), store
    )


class ThreadNode:
    """A storage node app under a real uvicorn server on a loopback port, in a thread."""

    def __init__(self, data_dir: Path, cap: int = 64 << 20) -> None:
        self.data_dir = data_dir
        config = uvicorn.Config(
            create_storage_app(data_dir, cap), host="127.0.0.1", port=0, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the storage node did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> httpx.Client:
        self.client = httpx.Client(base_url=self.start(), timeout=10)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.stop()
