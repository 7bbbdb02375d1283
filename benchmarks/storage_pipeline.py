"""The raw storage pipeline's speed on this machine: encrypt + erasure-code + hash.

``measure_raw_pipeline`` is the machine's own limit for the data plane, measured
in memory with no disk or network; ``datagora bench storage`` divides the real
publish and retrieve speeds by it. Throughout, 1 MB = 2**20 bytes (as in
``--size-mb``), so ratios are unit-free.
"""

from __future__ import annotations

import os
import time
from typing import Any

from datagora.crypto.aead import ChunkCipher, DataKey
from datagora.storage.pipeline import EncodingParams, encode_chunk, new_dataset_id

_MB = 1 << 20
# Distinct random chunks cycled through, so memory stays bounded for any size while
# the CPU still sees unpredictable bytes (and every chunk index is fresh).
_POOL_CHUNKS = 8


def measure_raw_pipeline(size_mb: int, chunk_size: int, k: int, n: int) -> dict[str, Any]:
    """Encode ``size_mb`` MB of random plaintext in memory, chunk by chunk, exactly as
    :func:`datagora.storage.pipeline.encode_stream` does (AES-256-GCM, zfec k-of-n,
    SHA-256 of every share), and return the throughput.

    Returns ``{"raw_pipeline_mb_s", "size_mb", "chunk_size", "k", "n", "seconds",
    "cpu_seconds"}``; ``raw_pipeline_mb_s`` counts plaintext MB per second of
    wall-clock time, ``cpu_seconds`` is the process CPU time the loop took.
    """
    if size_mb <= 0:
        raise ValueError("size_mb must be positive")
    params = EncodingParams(new_dataset_id(), 1, chunk_size=chunk_size, k=k, n=n)
    cipher = ChunkCipher(DataKey.generate(), params.dataset_id, params.version)
    total = size_mb * _MB
    pool = [os.urandom(chunk_size) for _ in range(min(_POOL_CHUNKS, -(-total // chunk_size)))]
    # Warm up tables and allocator outside the timed region.
    encode_chunk(cipher, params, 0, False, pool[0])
    done = 0
    index = 1
    started, cpu_started = time.perf_counter(), time.process_time()
    while done < total:
        plaintext = pool[index % len(pool)]
        if total - done < chunk_size:
            plaintext = plaintext[: total - done]
        encode_chunk(cipher, params, index, done + len(plaintext) == total, plaintext)
        done += len(plaintext)
        index += 1
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return {
        "raw_pipeline_mb_s": round(total / _MB / seconds, 1),
        "size_mb": size_mb,
        "chunk_size": chunk_size,
        "k": k,
        "n": n,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
    }
